// The board's map: markers for the rows of the coordinates table (#devices) that have a
// position. The table is the page's content; this only adds a view of it. Without Leaflet
// or without a network the map stays hidden or shows markers on a blank background.
(function () {
  "use strict";
  var box = document.getElementById("map");
  if (!box || typeof window.L === "undefined") {
    return;
  }
  var rows = document.querySelectorAll("#devices tr[data-lat]");
  if (!rows.length) {
    return;
  }
  box.hidden = false;
  var map = L.map(box, { scrollWheelZoom: false });
  L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
    maxZoom: 19,
    // The page itself sends no referrer; OpenStreetMap's tile policy asks for one, so the
    // tiles (only they) carry this site's origin, never a path.
    referrerPolicy: "strict-origin",
    attribution: "&copy; <a href=\"https://www.openstreetmap.org/copyright\">OpenStreetMap</a> contributors"
  }).addTo(map);
  var points = [];
  rows.forEach(function (row) {
    var lat = parseFloat(row.getAttribute("data-lat"));
    var lon = parseFloat(row.getAttribute("data-lon"));
    if (!isFinite(lat) || !isFinite(lon)) {
      return;
    }
    var label = document.createElement("span");
    label.textContent = row.getAttribute("data-name") || "";  // text, never markup
    var open = row.classList.contains("open");
    var marker = open ? L.marker([lat, lon]) : L.circleMarker([lat, lon], { radius: 7 });
    marker.bindTooltip(label, { permanent: open }).addTo(map);
    points.push([lat, lon]);
  });
  if (points.length === 1) {
    map.setView(points[0], 13);
  } else {
    map.fitBounds(points, { padding: [30, 30], maxZoom: 14 });
  }
}());
