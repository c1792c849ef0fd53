// Keyboard review: j/k select an item, c confirms it, r rejects it, n/p change page.
// The forms and links work without this file; it only presses them.
"use strict";

(function () {
  const items = Array.from(document.querySelectorAll("li.item"));
  let current = -1;
  let submitting = false;

  function select(index) {
    if (items.length === 0) return;
    const next = Math.max(0, Math.min(items.length - 1, index));
    if (current >= 0) {
      items[current].classList.remove("selected");
      items[current].removeAttribute("aria-current");
    }
    current = next;
    items[current].classList.add("selected");
    items[current].setAttribute("aria-current", "true");
    items[current].scrollIntoView({ block: "nearest" });
  }

  function give(verdict) {
    if (submitting || current < 0) return;
    const button = items[current].querySelector('button[name="verdict"][value="' + verdict + '"]');
    if (!button) return;
    submitting = true;
    button.form.requestSubmit(button);
  }

  function follow(rel) {
    const link = document.querySelector('nav.pages a[rel="' + rel + '"]');
    if (link) window.location.assign(link.href);
  }

  const fromHash = /^#item-(\d+)$/.exec(window.location.hash);
  select(fromHash ? Number(fromHash[1]) : 0);

  items.forEach(function (item, index) {
    item.addEventListener("click", function () { select(index); });
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    // Typing a note or choosing a filter is not a command.
    if (event.target instanceof Element && event.target.closest("input, textarea, select")) return;
    const actions = {
      j: function () { select(current + 1); },
      k: function () { select(current - 1); },
      c: function () { give("confirmed"); },
      r: function () { give("rejected"); },
      n: function () { follow("next"); },
      p: function () { follow("prev"); },
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
})();
