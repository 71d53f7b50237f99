// Chat highlights: the latest chat lines, shown for a while. Always set as text, never as
// HTML: a viewer's line is whatever they typed, markup included.

export const CHAT_LINES = 3; // lines shown at once (the oldest goes first)

export class ChatLines {
  /** `shownMs`: how long a line stays (its fade-out, in CSS, ends then too). */
  constructor(list, shownMs) {
    this.list = list;
    this.shownMs = shownMs;
    list.parentElement.style.setProperty("--chat-s", `${shownMs / 1000}s`);
    this.lines = []; // {element, until}
  }

  add(message, now) {
    const item = document.createElement("li");
    item.className = "chat-line";
    const author = document.createElement("span");
    author.className = "chat-author";
    author.textContent = message.author;
    const text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = message.text;
    item.append(author, document.createTextNode(": "), text);
    this.list.append(item);
    this.lines.push({ element: item, until: now + this.shownMs });
    while (this.lines.length > CHAT_LINES) this.lines.shift().element.remove();
  }

  /** Called each frame: drops lines whose time is up (cheap: looks at the oldest only). */
  expire(now) {
    while (this.lines.length && this.lines[0].until <= now) this.lines.shift().element.remove();
  }
}
