// Gallery: click a thumbnail → its most similar images in the chosen space.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const space = document.getElementById("space");
  space.addEventListener("change", () => space.form.submit());
  for (const thumb of document.querySelectorAll("#gallery .thumb")) {
    thumb.addEventListener("click", () => show(thumb.dataset.id));
  }
});

async function show(imageId) {
  const space = document.getElementById("space").value;
  say("Searching …");
  try {
    const answer = await api("/api/search?k=12&space=" + space + "&id=" + encodeURIComponent(imageId));
    const query = document.getElementById("query");
    query.replaceChildren(imageTile(
      "/api/images/" + encodeURIComponent(imageId) + "?size=384",
      answer.query_box, answer.query_width, answer.query_height, imageId, "hit query-tile"));
    renderHits(document.getElementById("hits"), answer);
    document.getElementById("results").hidden = false;
    say(answer.results.length + " results from the " + answer.space + " index " + answer.index_version);
    window.scrollTo(0, 0);
  } catch (error) {
    say(error.message, true);
  }
}
