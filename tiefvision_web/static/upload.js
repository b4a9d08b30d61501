// Search by photo: choose or drop a file → the located box and the most similar images.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("photo");
  const drop = document.getElementById("drop");
  input.addEventListener("change", () => { if (input.files.length) search(input.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) search(e.dataTransfer.files[0]);
  });
});

async function search(file) {
  const space = document.getElementById("space").value;
  const form = new FormData();
  form.append("image", file);
  say("Locating the product and searching …");
  try {
    const answer = await api("/api/search?k=12&space=" + space, { method: "POST", body: form });
    const preview = URL.createObjectURL(file);
    document.getElementById("query").replaceChildren(imageTile(
      preview, answer.query_box, answer.query_width, answer.query_height, file.name, "hit query-tile"));
    renderHits(document.getElementById("hits"), answer);
    document.getElementById("results").hidden = false;
    say(answer.results.length + " results from the " + answer.space + " index " + answer.index_version);
  } catch (error) {
    say(error.message, true);
  }
}
