// The dashboard's only script: confirm actions, and refresh the live part of a page in place.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

function refresh(live) {
  fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
    .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
    .then((html) => {
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
      if (fresh) {
        live.replaceChildren(...fresh.childNodes);
        live.dataset.refreshed = String(Number(live.dataset.refreshed || "0") + 1);
      }
    })
    .catch(() => { live.classList.add("stale"); });
}

window.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  const seconds = live && Number(live.dataset.live);
  if (seconds) window.setInterval(() => refresh(live), seconds * 1000);
});
