// Notebox: a little progressive enhancement. Every page works without it.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined ? source.value : source.textContent.trim();
  navigator.clipboard.writeText(text).then(
    () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); },
    () => { window.getSelection().selectAllChildren(source); }
  );
});

// Forms that destroy something ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Mark the current tab.
for (const a of document.querySelectorAll(".tabs a")) {
  if (a.getAttribute("href") === window.location.pathname) a.setAttribute("aria-current", "page");
}
