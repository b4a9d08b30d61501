// Triplet editor: H on top, its neighbours below; click → H+ (blue), another → H− (red).
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const reference = document.getElementById("reference");
  const id = reference.dataset.id;
  const hits = document.getElementById("hits");
  const save = document.getElementById("save");
  let positive = null, negative = null;

  function mark() {
    for (const tile of hits.children) {
      tile.classList.toggle("positive", tile.dataset.id === positive);
      tile.classList.toggle("negative", tile.dataset.id === negative);
    }
    save.disabled = !(positive && negative);
  }

  function pick(imageId) {
    if (imageId === positive) positive = null;
    else if (imageId === negative) negative = null;
    else if (!positive) positive = imageId;
    else if (!negative) negative = imageId;
    else { positive = imageId; negative = null; }
    mark();
  }

  save.addEventListener("click", async () => {
    try {
      const answer = await api("/api/triplets", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reference: id, positive, negative }),
      });
      say(answer.created ? "Saved triplet." : "This triplet was saved already.");
      positive = negative = null;
      mark();
    } catch (error) {
      say(error.message, true);
    }
  });

  try {
    const answer = await api("/api/search?k=12&space=" + reference.dataset.space + "&id=" + encodeURIComponent(id));
    renderHits(hits, answer);
    for (const tile of hits.children) tile.addEventListener("click", () => pick(tile.dataset.id));
    say("Pick H+ (more similar to H), then H−.");
  } catch (error) {
    say(error.message, true);
  }
});
