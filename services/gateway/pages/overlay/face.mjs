// The face, drawn in SVG from a checked skin (skin.mjs). Built once; each frame only the
// attributes that changed are written (mouth path, eyes, the body's motion), so a frame
// costs a few attribute writes and the DOM says what is shown (tests read it).

import { expressionOf } from "./skin.mjs";

const SVG = "http://www.w3.org/2000/svg";
const TWEEN_MS = 90; // expression changes ease in over about this long (brows, mouth shape)
const BREATH_S = 3.8; // one breath
const SWAY_S = 6.7; // one sway, not a multiple of a breath so the motion never looks looped

function node(tag, attrs = {}, parent = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  if (parent) parent.appendChild(element);
  return element;
}

function paint(element, fill, stroke, width) {
  // Styles, not attributes: a palette colour is var(--c-NAME), which attributes cannot hold.
  element.style.fill = fill;
  element.style.stroke = stroke;
  if (width) element.style.strokeWidth = String(width);
}

const round = (value) => Math.round(value * 100) / 100;

export class Face {
  /** Draws `skin` into the <svg> element; nothing moves until draw() is called. */
  constructor(svg, skin) {
    this.svg = svg;
    this.skin = skin;
    this.written = new Map(); // element -> attribute -> value last written (skip repeats)
    this.expression = "neutral";
    this.target = skin.expressions.neutral;
    this.now = this.paramsOf(this.target);
    this.lastTime = null;
    this.eyesShown = "";
    this.build();
    this.setExpression("neutral");
  }

  paramsOf(expression) {
    return {
      browAngle: expression.brows.angle,
      browRaise: expression.brows.raise,
      eyeOpen: expression.eyes.open,
      pupilX: expression.eyes.pupil[0],
      pupilY: expression.eyes.pupil[1],
      lookX: expression.eyes.look[0],
      lookY: expression.eyes.look[1],
      curve: expression.mouth.curve,
      width: expression.mouth.width,
      open: expression.mouth.open,
      cheeks: expression.cheeks,
    };
  }

  build() {
    const { skin, svg } = this;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${skin.width} ${skin.height}`);
    svg.dataset.skin = skin.file;
    const defs = node("defs", {}, svg);
    this.body = node("g", { class: "body" }, svg);
    this.drawParts("back");
    if (skin.cheeks) {
      this.cheeks = [skin.cheeks.left, skin.cheeks.right].map(([x, y], i) => {
        const cheek = node("ellipse", { class: "cheek", "data-side": i ? "right" : "left",
          cx: x, cy: y, rx: skin.cheeks.rx, ry: skin.cheeks.ry }, this.body);
        paint(cheek, skin.cheeks.color, "none");
        return cheek;
      });
    }
    this.eyes = [
      this.buildEye(defs, "left", skin.eyes.left),
      this.buildEye(defs, "right", skin.eyes.right),
    ];
    if (skin.brows) {
      const { length, thickness, arch, color } = skin.brows;
      const d = `M ${-length / 2} 0 Q 0 ${-arch * 2} ${length / 2} 0`;
      this.brows = ["left", "right"].map((side) => {
        const brow = node("path", { class: "brow", "data-side": side, d }, this.body);
        paint(brow, "none", color, thickness);
        brow.style.strokeLinecap = "round";
        return brow;
      });
    }
    this.buildMouth(defs);
    this.drawParts("front");
  }

  drawParts(layer) {
    for (const part of this.skin.parts.filter((p) => p.layer === layer)) {
      let shape;
      if (part.kind === "path") shape = node("path", { d: part.d }, this.body);
      else if (part.kind === "ellipse") {
        const [cx, cy, rx, ry] = part.values;
        shape = node("ellipse", { cx, cy, rx, ry }, this.body);
      } else {
        const [cx, cy, r] = part.values;
        shape = node("circle", { cx, cy, r }, this.body);
      }
      shape.classList.add("part");
      if (part.name) shape.dataset.part = part.name;
      paint(shape, part.fill, part.stroke, part.width);
      shape.style.strokeLinejoin = "round";
      shape.style.strokeLinecap = "round";
      if (part.opacity < 1) shape.style.opacity = String(part.opacity);
    }
  }

  buildEye(defs, side, [x, y]) {
    const { rx, ry, white, iris, pupil, highlight, line, lineWidth } = this.skin.eyes;
    const at = `translate(${x} ${y})`;
    const place = node("g", { class: "eye", "data-side": side, transform: at }, this.body);
    const open = node("g", { class: "open" }, place);
    const clip = node("clipPath", { id: `eye-clip-${side}` }, defs);
    node("ellipse", { cx: 0, cy: 0, rx, ry }, clip);
    const ball = node("ellipse", { class: "ball", cx: 0, cy: 0, rx, ry }, open);
    paint(ball, white ?? iris.color, line, lineWidth * 0.6);
    const inside = node("g", { "clip-path": `url(#eye-clip-${side})` }, open);
    const gaze = node("g", { class: "gaze" }, inside); // where the eye looks (expression)
    if (white && iris.r > 0) {
      paint(node("circle", { class: "iris", cx: 0, cy: 0, r: iris.r }, gaze), iris.color, "none");
    }
    const pupilShape = node("ellipse", { class: "pupil", cx: 0, cy: 0, rx: pupil.rx, ry: pupil.ry }, gaze);
    paint(pupilShape, pupil.color, "none");
    if (highlight) {
      const r = Math.max(1.5, Math.min(rx, ry) * 0.28);
      paint(node("circle", { class: "shine", cx: -rx * 0.3, cy: -ry * 0.35, r }, gaze), "#fff", "none");
    }
    const lid = node("path", { class: "lid", d: "" }, place);
    paint(lid, "none", line, lineWidth);
    lid.style.strokeLinecap = "round";
    return { side, open, gaze, pupil: pupilShape, lid };
  }

  buildMouth(defs) {
    const { mouth } = this.skin;
    const clip = node("clipPath", { id: "mouth-clip" }, defs);
    this.mouthClip = node("path", { d: "" }, clip);
    this.mouthGroup = node("g", { class: "mouth-group" }, this.body);
    this.mouthShape = node("path", { class: "mouth", d: "" }, this.mouthGroup);
    paint(this.mouthShape, mouth.inside, mouth.lip, mouth.lipWidth);
    this.mouthShape.style.strokeLinejoin = "round";
    this.mouthShape.style.strokeLinecap = "round";
    const inner = node("g", { "clip-path": "url(#mouth-clip)" }, this.mouthGroup);
    const [cx, cy] = mouth.center;
    if (mouth.teeth) {
      const box = { x: cx - mouth.width, y: cy, width: mouth.width * 2, height: 0 };
      this.teeth = node("rect", { class: "teeth", ...box }, inner);
      paint(this.teeth, mouth.teeth, "none");
    }
    if (mouth.tongue) {
      this.tongue = node("ellipse", { class: "tongue", cx, cy, rx: mouth.width * 0.32, ry: 0 }, inner);
      paint(this.tongue, mouth.tongue, "none");
    }
    // The lip line again on top, so the tongue never covers the outline.
    this.mouthLine = node("path", { class: "mouth-line", d: "" }, this.mouthGroup);
    paint(this.mouthLine, "none", mouth.lip, mouth.lipWidth);
    this.mouthLine.style.strokeLinejoin = "round";
    this.mouthLine.style.strokeLinecap = "round";
  }

  /** Shows an expression tag (an unknown one as the skin's fallback); returns the one shown. */
  setExpression(tag) {
    const name = expressionOf(this.skin, tag);
    if (name === this.expression && this.svg.dataset.expression) return name;
    this.expression = name;
    this.target = this.skin.expressions[name];
    const colors = { ...this.skin.colors, ...this.target.colors };
    for (const [key, value] of Object.entries(colors)) this.svg.style.setProperty(`--c-${key}`, value);
    this.svg.dataset.expression = name;
    return name;
  }

  set(element, name, value) {
    let attributes = this.written.get(element);
    if (!attributes) this.written.set(element, (attributes = new Map()));
    if (attributes.get(name) === value) return;
    attributes.set(name, value);
    element.setAttribute(name, value);
  }

  /**
   * One frame: `mouth` 0..1 from the track, `eyes` "open" | "closed" (a blink), `time`
   * in ms (performance.now()). Returns what the eyes show ("open", "closed", "smile").
   */
  draw(time, mouth, blinking) {
    const dt = this.lastTime === null ? 1000 : time - this.lastTime;
    this.lastTime = time;
    const ease = 1 - Math.exp(-dt / TWEEN_MS);
    const target = this.paramsOf(this.target);
    for (const key of Object.keys(this.now)) {
      const gap = target[key] - this.now[key];
      this.now[key] = Math.abs(gap) < 1e-3 ? target[key] : this.now[key] + gap * ease;
    }
    const p = this.now;
    this.drawMotion(time / 1000, mouth);
    const shape = this.target.eyes.shape;
    const eyes = blinking || shape === "closed" ? "closed" : shape === "smile" ? "smile" : "open";
    this.drawEyes(eyes, p);
    this.drawBrows(p);
    this.drawMouth(mouth, p);
    if (this.cheeks) for (const cheek of this.cheeks) this.set(cheek, "opacity", String(round(p.cheeks)));
    return eyes;
  }

  drawMotion(seconds, mouth) {
    const { pivot, breathe, sway, nod } = this.skin.motion;
    // Breathing lifts the head a little; the sway tilts it around the neck; speaking nods
    // it with the mouth, so a talking face is never stiff.
    const lift = breathe * Math.sin((2 * Math.PI * seconds) / BREATH_S) + nod * mouth * 0.5;
    const tilt = sway * Math.sin((2 * Math.PI * seconds) / SWAY_S);
    const motion = `translate(0 ${round(lift)}) rotate(${round(tilt)} ${pivot[0]} ${pivot[1]})`;
    this.set(this.body, "transform", motion);
  }

  drawEyes(eyes, p) {
    const { rx, ry } = this.skin.eyes;
    for (const eye of this.eyes) {
      if (eyes === "open") {
        this.set(eye.open, "display", "inline");
        this.set(eye.lid, "display", "none");
        this.set(eye.open, "transform", `scale(1 ${round(Math.max(0.05, p.eyeOpen))})`);
        this.set(eye.pupil, "transform", `scale(${round(p.pupilX)} ${round(p.pupilY)})`);
        const look = `translate(${round(p.lookX * rx * 0.45)} ${round(p.lookY * ry * 0.45)})`;
        this.set(eye.gaze, "transform", look);
      } else {
        this.set(eye.open, "display", "none");
        this.set(eye.lid, "display", "inline");
        // closed: a lid line curving down; smile: an arch, the ^ of a happy face.
        const d = eyes === "closed"
          ? `M ${-rx} 0 Q 0 ${round(ry * 0.45)} ${rx} 0`
          : `M ${-rx} ${round(ry * 0.25)} Q 0 ${round(-ry * 0.9)} ${rx} ${round(ry * 0.25)}`;
        this.set(eye.lid, "d", d);
      }
    }
  }

  drawBrows(p) {
    if (!this.brows) return;
    const sides = [this.skin.brows.left, this.skin.brows.right];
    this.brows.forEach((brow, i) => {
      const [x, y] = sides[i];
      // A positive angle lowers the inner ends (towards the nose): angry. Negative: sad.
      const angle = i === 0 ? p.browAngle : -p.browAngle;
      this.set(brow, "transform", `translate(${x} ${round(y - p.browRaise)}) rotate(${round(angle)})`);
    });
  }

  drawMouth(amount, p) {
    const { center, width, open } = this.skin.mouth;
    const [cx, cy] = center;
    const o = Math.min(1, Math.max(0, Math.max(amount, p.open)));
    // An open mouth rounds up: narrower as it opens, corners follow the expression's curve.
    const w = (width * p.width * (1 - 0.22 * o)) / 2;
    const cornerY = cy - p.curve * width * 0.16;
    const upperMid = cy - o * open * 0.22 + p.curve * width * 0.04;
    const lowerMid = cy + o * open * 0.78 + p.curve * width * 0.06;
    // A quadratic through the corners and a midpoint has its control at 2*mid - corner.
    const up = 2 * upperMid - cornerY;
    const down = 2 * lowerMid - cornerY;
    const [left, right, corner] = [round(cx - w), round(cx + w), round(cornerY)];
    const d = `M ${left} ${corner} Q ${cx} ${round(up)} ${right} ${corner} Q ${cx} ${round(down)} ${left} ${corner} Z`;
    this.set(this.mouthShape, "d", d);
    this.set(this.mouthClip, "d", d);
    this.set(this.mouthLine, "d", d);
    if (this.tongue) {
      this.set(this.tongue, "cy", String(round(lowerMid + open * 0.12)));
      this.set(this.tongue, "ry", String(round(o * open * 0.45)));
    }
    if (this.teeth) {
      this.set(this.teeth, "y", String(round(Math.min(upperMid, cornerY) - 2)));
      this.set(this.teeth, "height", String(round(2 + o * open * 0.18)));
    }
  }
}
