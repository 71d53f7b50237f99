// Say and chat: text the character speaks as is (POST /api/say, no LLM), and a chat line
// it answers (POST /api/chat, with an author). Enter sends; Shift+Enter is a new line.

import { api } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, note } from "./dom.mjs";

function sendOnEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

export function setupWords({ session }) {
  const message = document.getElementById("words-note");
  const forms = [
    {
      form: document.getElementById("say-form"),
      text: document.getElementById("say-text"),
      send: (text) => api("/api/say", { method: "POST", body: { text, session } }),
      done: "Said",
    },
    {
      form: document.getElementById("chat-form"),
      text: document.getElementById("chat-text"),
      send: (text) => {
        const author = document.getElementById("chat-author").value.trim() || "operator";
        return api("/api/chat", { method: "POST", body: { text, author, session } });
      },
      done: "Sent",
    },
  ];
  for (const { form, text, send, done } of forms) {
    sendOnEnter(text, form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const words = text.value.trim();
      if (!words) return;
      busy(form.querySelector("button[type=submit]"), async () => {
        try {
          const answer = await send(words);
          text.value = "";
          note(message, `${done} (turn ${answer.turn_id}).`, "ok");
        } catch (error) {
          note(message, problem(error), "error");
        }
      });
    });
  }
}
