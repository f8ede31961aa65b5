"""The demo plays its whole story (faster than `make demo`, same code path)."""

from __future__ import annotations

import io

from alerter.demo import run_demo


async def test_demo_tells_the_whole_story() -> None:
    out = io.StringIO()

    code = await run_demo(speed=400.0, out=out)

    text = out.getvalue()
    assert code == 0, text
    titles = [line.strip() for line in text.splitlines() if line.strip().startswith("** ")]
    kinds = [t.removeprefix("** ").split(":")[0] for t in titles]
    assert kinds[0] == "HELP"
    for kind in ("HELP update", "Reminder 1", "HELP cancelled", "Silent", "Back in contact"):
        assert kind in kinds, kinds
    assert kinds.index("HELP cancelled") < kinds.index("Back in contact")
    assert "to backup-phone:\n  Escalated: HELP Alice" in text  # the SMS form, no title
    assert "missing from the story" not in text
