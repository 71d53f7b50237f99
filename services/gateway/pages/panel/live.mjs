// The live transcript and captions: what was heard (asr.partial while speaking, asr.final)
// and read in chat, and the character's replies as policy writes them (policy.token),
// from every session. It starts with the latest turns the status knows, so a page opened
// mid-show is not blank; live events then update those same lines (keyed by turn).

import { h } from "./dom.mjs";

const KEEP = 200; // lines kept on the page
export const LIVE_TOPICS = ["asr.partial", "asr.final", "chat.message", "policy.token"];

export function setupLive({ session, toolCalls }) {
  const list = document.getElementById("transcript");
  const heard = document.getElementById("caption-heard");
  const saying = document.getElementById("caption-reply");
  const lines = new Map(); // "<session>/<turn>/<in|out>" -> {item, text, meta}
  let seeded = false;

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function line(lineKey, kind, label, where) {
    let found = lines.get(lineKey);
    if (found) return found;
    const text = h("span", { class: "text" });
    const meta = h("span", { class: "meta" }, label, where && where !== session ? ` · ${where}` : "");
    // A reply shows the tools it called (tool_calls.mjs) between its label and its words.
    const tools = kind === "character" ? toolCalls?.slot(where, lineKey.split("/")[1]) : null;
    const item = h("li", { class: kind, "data-key": lineKey }, meta, tools, text);
    found = { item, text, meta };
    lines.set(lineKey, found);
    const follow = nearBottom();
    list.append(item);
    while (list.children.length > KEEP) {
      lines.delete(list.firstElementChild.dataset.key);
      list.firstElementChild.remove();
    }
    if (follow) list.scrollTop = list.scrollHeight;
    return found;
  }

  function caption(element, text) {
    element.textContent = text || "—";
    element.classList.toggle("muted", !text);
  }

  const replies = new Map(); // "<session>/<turn>" -> text so far

  return {
    /** The first status: its latest turns (newest first there) begin the transcript. */
    seed(status) {
      if (seeded) return;
      seeded = true;
      for (const turn of [...(status.turns || [])].reverse()) {
        const base = `${turn.session_id}/${turn.turn_id}`;
        if (turn.heard) {
          const label = turn.source === "speech" ? "heard" : turn.source.replace("_", " ");
          line(`${base}/in`, "user", label, turn.session_id).text.textContent = turn.heard;
        }
        if (turn.reply) {
          const out = line(`${base}/out`, "character", "character", turn.session_id);
          out.text.textContent = turn.reply;
          if (turn.status) out.item.dataset.status = turn.status;
        }
      }
      list.scrollTop = list.scrollHeight;
    },

    event({ topic, message }) {
      const where = message.session_id;
      const base = `${where}/${message.turn_id}`;
      if (topic === "asr.partial") {
        caption(heard, message.text);
      } else if (topic === "asr.final") {
        caption(heard, message.text);
        line(`${base}/in`, "user", "heard", where).text.textContent = message.text;
      } else if (topic === "chat.message") {
        const label = `${message.author} (${message.platform.replace("_", " ")})`;
        line(`${base}/in`, "user", label, where).text.textContent = message.text;
      } else if (topic === "policy.token") {
        const out = line(`${base}/out`, "character", "character", where);
        const text = message.final ? message.reply_text || "" : (replies.get(base) || "") + message.text;
        if (message.final) {
          replies.delete(base);
          out.item.dataset.status = message.status;
        } else {
          replies.set(base, text);
        }
        out.text.textContent = text;
        caption(saying, text);
      }
    },
  };
}
