// Shared by the pages: API calls (with the bearer token when one is entered), messages,
// and image tiles with the product box drawn over them.
"use strict";

const TOKEN_KEY = "tiefvision-api-token";

function apiToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = apiToken();
  if (token) headers.set("Authorization", "Bearer " + token);
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new Error(detail);
  }
  return body;
}

function say(text, isError = false) {
  const el = document.getElementById("message");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// A box [l, t, r, b] in pixels of a width × height photo, as a positioned element.
function boxElement(box, width, height) {
  const el = document.createElement("div");
  el.className = "box";
  placeBox(el, box, width, height);
  return el;
}

function placeBox(el, box, width, height) {
  el.style.left = (100 * box[0] / width) + "%";
  el.style.top = (100 * box[1] / height) + "%";
  el.style.width = (100 * (box[2] - box[0]) / width) + "%";
  el.style.height = (100 * (box[3] - box[1]) / height) + "%";
}

// A tile: the photo (a thumbnail), its box and a caption line.
function imageTile(src, box, width, height, caption, className = "hit") {
  const tile = document.createElement("button");
  tile.type = "button";
  tile.className = className;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  frame.appendChild(img);
  if (box && width && height) frame.appendChild(boxElement(box, width, height));
  tile.appendChild(frame);
  const text = document.createElement("span");
  text.className = "caption";
  text.textContent = caption;
  tile.appendChild(text);
  return tile;
}

function renderHits(container, answer) {
  container.replaceChildren();
  for (const hit of answer.results) {
    const tile = imageTile(
      "/api/images/" + encodeURIComponent(hit.image_id) + "?size=256",
      hit.box, hit.width, hit.height, hit.score.toFixed(3) + " · " + hit.image_id);
    tile.dataset.id = hit.image_id;
    tile.dataset.score = hit.score;
    container.appendChild(tile);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  if (!input) return;
  input.value = apiToken();
  input.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
  document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());
});
