"""Rule files: the schema admins write and the loader that checks it (file:line errors)."""

from alerter.rules.loader import load_rules
from alerter.rules.schema import Escalation, Rule, RuleSet, SilentFor, Trigger, When

__all__ = ["Escalation", "Rule", "RuleSet", "SilentFor", "Trigger", "When", "load_rules"]
