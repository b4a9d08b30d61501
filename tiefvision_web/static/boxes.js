// Box editor: draw the product box with the mouse (or move / resize it), save it.
"use strict";

let box = null;  // [l, t, r, b] in pixels of the photo
let drag = null;
let edited = false;  // the user drew or reset before the stored box arrived: theirs wins

document.addEventListener("DOMContentLoaded", async () => {
  const editor = document.getElementById("editor");
  const id = editor.dataset.id;
  const width = Number(editor.dataset.width), height = Number(editor.dataset.height);
  const img = document.getElementById("photo");
  const el = document.getElementById("box");

  function draw() {
    el.hidden = !box;
    if (box) placeBox(el, box, width, height);
    document.getElementById("coords").textContent = box ? "box: " + box.join(", ") : "no box";
  }

  function toPixels(event) {
    const rect = img.getBoundingClientRect();
    const x = Math.round((event.clientX - rect.left) * width / rect.width);
    const y = Math.round((event.clientY - rect.top) * height / rect.height);
    return [Math.min(width, Math.max(0, x)), Math.min(height, Math.max(0, y))];
  }

  function near(a, b) {
    const rect = img.getBoundingClientRect();
    return Math.abs(a - b) * rect.width / width < 10;
  }

  editor.addEventListener("mousedown", (event) => {
    event.preventDefault();
    edited = true;
    const [x, y] = toPixels(event);
    if (box) {
      const corners = [[0, 1], [2, 1], [0, 3], [2, 3]];
      for (const [cx, cy] of corners) {
        if (near(x, box[cx]) && near(y, box[cy])) {
          drag = { mode: "corner", cx, cy };
          return;
        }
      }
      if (x > box[0] && x < box[2] && y > box[1] && y < box[3]) {
        drag = { mode: "move", x, y, start: box.slice() };
        return;
      }
    }
    drag = { mode: "draw", x, y };
    box = [x, y, x, y];
    draw();
  });

  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const [x, y] = toPixels(event);
    if (drag.mode === "draw") {
      box = [Math.min(drag.x, x), Math.min(drag.y, y), Math.max(drag.x, x), Math.max(drag.y, y)];
    } else if (drag.mode === "corner") {
      box[drag.cx] = x;
      box[drag.cy] = y;
    } else {
      const dx = Math.max(-drag.start[0], Math.min(width - drag.start[2], x - drag.x));
      const dy = Math.max(-drag.start[1], Math.min(height - drag.start[3], y - drag.y));
      box = [drag.start[0] + dx, drag.start[1] + dy, drag.start[2] + dx, drag.start[3] + dy];
    }
    draw();
  });

  window.addEventListener("mouseup", () => {
    if (!drag) return;
    drag = null;
    if (box) {
      box = [Math.min(box[0], box[2]), Math.min(box[1], box[3]), Math.max(box[0], box[2]), Math.max(box[1], box[3])];
      if (box[2] - box[0] < 2 || box[3] - box[1] < 2) box = null;
    }
    draw();
  });

  document.getElementById("reset").addEventListener("click", () => { edited = true; box = null; draw(); });
  document.getElementById("save").addEventListener("click", async () => {
    if (!box) { say("Draw a box first.", true); return; }
    try {
      const saved = await api("/api/boxes/" + encodeURIComponent(id), {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ box }),
      });
      document.getElementById("stale").hidden = !saved.stale;
      say("Saved box " + saved.box.join(", ") + ".");
    } catch (error) {
      say(error.message, true);
    }
  });

  try {
    const stored = await api("/api/boxes/" + encodeURIComponent(id));
    if (!edited) box = stored.box || stored.located || null;
    document.getElementById("stale").hidden = !stored.stale;
    say(stored.box ? "Annotated box (" + stored.source + ")." :
      stored.located ? "No box yet: starting from the located one." : "No box yet: draw one.");
  } catch (error) {
    say(error.message, true);
  }
  draw();
});
