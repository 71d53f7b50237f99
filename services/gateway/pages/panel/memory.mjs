// Memory: what the character remembers between streams (long-term memory, /api/memory in
// services/gateway/routes/long_term.py). Each scope is one who-remembers: `character:<persona>`
// is the live character, `session:<npc>:<player>` an NPC's memory of one player. Pick one to
// see its memories (newest first) or search them by meaning, export them, back them up,
// reset them (a backup is kept first) and restore a backup; delete one memory; forget a
// viewer everywhere (a privacy request: long-term items here, short-term memory by policy).
//
// Memories are what viewers wrote: only ever text (h() makes text nodes), never HTML.

import { api, key } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, h, note } from "./dom.mjs";

const SHOWN = 50; // memories drawn at first; "Show more" adds as many again
// The API lists oldest first, at most `limit`: the newest need the whole list.
const LIST_LIMIT = 10_000;
const SEARCH_LIMIT = 10;
// A hit scoring under this is hardly related (policy recalls from 0.4 by default): faded.
const WEAK_MATCH = 0.3;
const KINDS = {
  fact: ["fact", "something a viewer said"],
  episode: ["summary", "a summary of part of a conversation"],
  note: ["note", "what the character chose to remember"],
};

const path = (scope) => `/api/memory/scopes/${encodeURIComponent(scope)}`;
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Who remembers, in the streamer's words: {name, who}. */
export function describeScope(scope) {
  const [kind, ...rest] = scope.split(":");
  if (kind === "character") return { name: rest.join(":"), who: "the live character" };
  if (kind === "session" && rest.length >= 2) {
    return { name: rest[0], who: `NPC · remembers player ${rest.slice(1).join(":")}` };
  }
  if (kind === "session") return { name: rest.join(":"), who: "one session" };
  return { name: scope, who: "" };
}

/** A time of day for today, else the date and time. */
function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function counts(stats) {
  const byKind = stats.by_kind || {};
  const kinds = [...new Set([...Object.keys(KINDS), ...Object.keys(byKind)])] // facts first
    .filter((kind) => byKind[kind] > 0)
    .map((kind) => plural(byKind[kind], (KINDS[kind] || [kind])[0]));
  return [plural(stats.items, "memory", "memories"), plural(stats.authors, "viewer"), ...kinds];
}

/** The sentence a failed read deserves: long-term memory off, the store down, or else. */
function unavailable(error) {
  if ((error.status === 404 || error.status === 409) && /is off/.test(error.message)) {
    return "Long-term memory is off: the character forgets everything when a session ends. " +
      "To turn it on, set MARIONETTE_MEMORY_LONG_TERM=true and start Marionette again.";
  }
  if (error.status === 503) return `The memory store does not open: ${error.message}`;
  return `Memory could not be read: ${problem(error)}`;
}

/** The export as a file download (fetched with the key, so it never goes in a link). */
async function download(scope) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(`${path(scope)}/export`, { headers });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    const error = new Error(answer.error || `export: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const link = h("a", {
    href: URL.createObjectURL(await response.blob()),
    download: named ? named[1] : "long-term-memory.json",
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  return link.download;
}

export function setupMemory() {
  const $ = (id) => document.getElementById(id);
  const card = $("memory");
  const state = $("memory-state");
  const scopeList = $("memory-scopes");
  const scopeBox = $("memory-scope");
  const query = $("memory-query");
  const showAll = $("memory-show-all");
  const itemsState = $("memory-items-state");
  const itemList = $("memory-items");
  const more = $("memory-more");
  const backupList = $("memory-backups");
  const message = $("memory-note");
  const dialog = $("memory-confirm");
  let selected = null; // the scope shown
  let searched = ""; // its search, or "" for the listing
  let listing = []; // the listing, newest first
  let shown = SHOWN;

  /** A modal yes/no (Cancel has the focus, Esc cancels); resolves to true for yes. */
  function ask(title, body, yes) {
    $("memory-confirm-title").textContent = title;
    $("memory-confirm-body").textContent = body;
    $("memory-confirm-yes").textContent = yes;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((done) => {
      dialog.addEventListener("close", () => done(dialog.returnValue === "yes"), { once: true });
    });
  }

  async function loadScopes() {
    let scopes;
    try {
      scopes = await api("/api/memory/scopes");
    } catch (error) {
      scopeList.replaceChildren();
      scopeBox.hidden = true;
      state.hidden = false;
      state.textContent = unavailable(error);
      card.dataset.state = "unavailable";
      return;
    }
    // The scope shown stays listed when a reset emptied it: its backups are still there.
    if (selected && !scopes.some((s) => s.scope === selected)) {
      scopes.push(await api(path(selected)).catch(() => ({ scope: selected, items: 0, authors: 0, by_kind: {} })));
    }
    state.hidden = scopes.length > 0;
    state.textContent = "The character remembers nothing yet. What viewers tell it, and " +
      "what it chooses to remember, shows here as the show goes on.";
    card.dataset.state = scopes.length ? "ready" : "empty";
    scopeList.replaceChildren(...scopes.map(scopeButton));
    if (selected) showHeader(scopes.find((s) => s.scope === selected));
  }

  function scopeButton(stats) {
    const { name, who } = describeScope(stats.scope);
    const button = h(
      "button",
      { type: "button", class: "scope", title: stats.scope, "aria-pressed": String(stats.scope === selected),
        onclick: () => select(stats.scope) },
      h("span", { class: "scope-name" }, name),
      h("span", { class: "scope-who" }, who),
      h("span", { class: "scope-counts" }, counts(stats).slice(0, 2).join(" · ")),
    );
    return h("li", { "data-scope": stats.scope, "data-items": stats.items }, button);
  }

  function showHeader(stats) {
    const { name, who } = describeScope(selected);
    const facts = stats ? counts(stats) : [];
    if (stats?.newest) facts.push(`newest ${when(stats.newest)}`);
    $("memory-scope-title").replaceChildren(
      h("span", { class: "scope-title-name" }, `${name}${who ? ` — ${who}` : ""}`),
      h("span", { class: "scope-title-counts" }, facts.join(" · ")),
    );
  }

  async function select(scope) {
    selected = scope;
    searched = "";
    query.value = "";
    for (const button of scopeList.querySelectorAll("button.scope")) {
      button.setAttribute("aria-pressed", String(button.title === scope));
    }
    scopeBox.hidden = false;
    card.dataset.scope = scope;
    note(message, "");
    await Promise.all([loadScopes(), loadItems(), loadBackups()]);
  }

  function itemRow(item, score) {
    const [kind, means] = KINDS[item.kind] || [item.kind, ""];
    const remove = h("button", { type: "button", class: "link-button", "aria-label": `Delete the memory “${item.text.slice(0, 80)}”`,
      onclick: () => deleteItem(item, remove) }, "Delete");
    return h(
      "li",
      { class: "memory-item", "data-id": item.id, "data-kind": item.kind, "data-weak": score < WEAK_MATCH },
      h(
        "div",
        { class: "memory-item-head" },
        h("span", { class: "kind", title: means }, kind),
        item.author ? h("span", { class: "author" }, item.author) : null,
        h("time", { datetime: item.created_at, title: new Date(item.created_at).toLocaleString() }, when(item.created_at)),
        score === undefined ? null
          : h("span", { class: "score", title: "How close in meaning to the search (1: the same)" }, `match ${score.toFixed(2)}`),
        remove,
      ),
      h("p", { class: "memory-text" }, item.text),
    );
  }

  function drawItems() {
    if (searched) return;
    itemList.replaceChildren(...listing.slice(0, shown).map((item) => itemRow(item)));
    more.hidden = listing.length <= shown;
    more.textContent = `Show ${Math.min(SHOWN, listing.length - shown)} more`;
    itemsState.textContent = listing.length
      ? `${plural(listing.length, "memory", "memories")}, newest first.`
      : "Nothing remembered here (a reset? its backup is below).";
  }

  async function loadItems() {
    const scope = selected;
    showAll.hidden = !searched;
    try {
      if (searched) {
        const params = new URLSearchParams({ q: searched, limit: String(SEARCH_LIMIT) });
        const answer = await api(`${path(scope)}/items?${params}`);
        if (scope !== selected) return;
        more.hidden = true;
        itemList.replaceChildren(...answer.hits.map((hit) => itemRow(hit.item, hit.score)));
        const weak = answer.hits.some((hit) => hit.score < WEAK_MATCH) ? " Faded: hardly related." : "";
        itemsState.textContent = answer.hits.length
          ? `The ${plural(answer.hits.length, "memory", "memories")} closest in meaning to “${searched}”, best first.${weak}`
          : `Nothing here is close to “${searched}”.`;
      } else {
        const answer = await api(`${path(scope)}/items?limit=${LIST_LIMIT}`);
        if (scope !== selected) return;
        listing = answer.items.reverse();
        shown = SHOWN;
        drawItems();
      }
    } catch (error) {
      itemList.replaceChildren();
      more.hidden = true;
      itemsState.textContent = searched && error.status === 503
        ? `Search is not available: ${error.message}`
        : problem(error);
    }
  }

  async function loadBackups() {
    const scope = selected;
    let backups = [];
    try {
      backups = await api(`${path(scope)}/backups`);
    } catch (error) {
      note(message, problem(error), "error");
    }
    if (scope !== selected) return;
    $("memory-backups-empty").hidden = backups.length > 0;
    backupList.replaceChildren(
      ...backups.map((backup) => {
        const restore = h("button", { type: "button", class: "secondary small", "data-backup": backup.id,
          onclick: () => restoreBackup(backup, restore) }, "Restore");
        return h(
          "li",
          { class: "backup", "data-backup": backup.id, "data-items": backup.items },
          h("span", { class: "backup-what" },
            h("time", { datetime: backup.made_at }, when(backup.made_at)), " · ",
            plural(backup.items, "memory", "memories"),
            backup.reason ? h("span", { class: "muted" }, ` · ${backup.reason}`) : null),
          restore,
        );
      }),
    );
  }

  const reloadScope = () => (selected ? Promise.all([loadScopes(), loadItems(), loadBackups()]) : loadScopes());

  async function change(button, action, done) {
    await busy(button, async () => {
      try {
        const answer = await action();
        note(message, done(answer), "ok");
      } catch (error) {
        note(message, problem(error), "error");
      }
      await reloadScope();
    });
  }

  async function deleteItem(item, button) {
    const yes = await ask("Delete this memory?", `“${item.text}” is forgotten. Backups still hold ` +
      "it: restoring one brings it back.", "Delete");
    if (!yes) return;
    await change(button, () => api(`${path(selected)}/items/${encodeURIComponent(item.id)}`, { method: "DELETE" }),
      () => "Deleted that memory.");
  }

  async function restoreBackup(backup, button) {
    const { name } = describeScope(selected);
    const yes = await ask(`Restore ${name}'s memory from ${when(backup.made_at)}?`,
      `Its ${plural(backup.items, "memory", "memories")} replace what ${name} remembers now. ` +
      "To keep what it remembers now, press Back up now first.", "Restore");
    if (!yes) return;
    searched = "";
    query.value = "";
    await change(button, () => api(`${path(selected)}/restore`, { method: "POST", body: { backup_id: backup.id } }),
      (answer) => `Restored: ${name} remembers ${plural(answer.items, "memory", "memories")} again.`);
  }

  $("memory-reset").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    const { name } = describeScope(selected);
    const yes = await ask(`Reset ${name}'s memory?`,
      `Everything ${name} remembers here is forgotten. A backup is kept first: it is listed ` +
      "under Backups, and Restore brings it all back.", "Reset");
    if (!yes) return;
    searched = "";
    query.value = "";
    await change(button, () => api(`${path(selected)}/reset`, { method: "POST" }),
      (backup) => `Reset. The ${plural(backup.items, "memory", "memories")} are kept in the ` +
        `backup of ${when(backup.made_at)}.`);
  });

  $("memory-backup").addEventListener("click", (event) =>
    change(event.currentTarget, () => api(`${path(selected)}/backups`, { method: "POST", body: { reason: "from the panel" } }),
      (backup) => `Backed up ${plural(backup.items, "memory", "memories")}.`));

  $("memory-export").addEventListener("click", (event) => busy(event.currentTarget, async () => {
    try {
      note(message, `Saved ${await download(selected)} (your browser's downloads).`, "ok");
    } catch (error) {
      note(message, problem(error), "error");
    }
  }));

  $("memory-search").addEventListener("submit", (event) => {
    event.preventDefault();
    searched = query.value.trim();
    loadItems();
  });
  showAll.addEventListener("click", () => {
    searched = "";
    query.value = "";
    loadItems();
  });
  more.addEventListener("click", () => {
    shown += SHOWN;
    drawItems();
  });
  $("memory-refresh").addEventListener("click", (event) =>
    busy(event.currentTarget, reloadScope));

  $("memory-forget").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("memory-forget-name");
    const author = field.value.trim();
    if (!author) return;
    const yes = await ask(`Forget ${author} everywhere?`,
      `Everything the character and every NPC remember of ${author} is deleted, backups ` +
      "included, and their lines are taken out of every session's short-term memory (the " +
      `conversation so far). This cannot be undone. Write the name exactly as in chat: “${author}”.`,
      "Forget them");
    if (!yes) return;
    await change(event.submitter, () => api(`/api/memory/viewers/${encodeURIComponent(author)}`, { method: "DELETE" }),
      (answer) => {
        field.value = "";
        const items = answer.long_term ? `${plural(answer.long_term_items, "memory", "memories")} deleted; ` : "";
        return `Forgot ${answer.author}: ${items}their lines are being taken out of short-term memory.`;
      });
  });

  loadScopes();
}
