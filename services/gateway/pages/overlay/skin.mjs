// Skins: the character's look as a JSON file (docs/overlay.md), checked before drawing so a
// broken file says what is wrong instead of drawing half a face.

export const FORMAT = "marionette-skin/1";
export const EYE_SHAPES = ["open", "smile", "closed"];
const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/i;
// Path data: commands and numbers only (no url(), no markup can hide in it).
const PATH_DATA = /^[MmLlHhVvCcSsQqTtAaZz0-9eE.,+\-\s]+$/;
const MAX_PROBLEMS = 8;

/** Thrown with every problem found (field: what is wrong), for the page to show. */
export class SkinError extends Error {
  constructor(name, problems) {
    super(`skin "${name}": ${problems.join("; ")}`);
    this.skin = name;
    this.problems = problems;
  }
}

/** What an expression is when the skin does not say (neutral's missing fields too). */
export const NEUTRAL = Object.freeze({
  brows: { angle: 0, raise: 0 },
  eyes: { open: 1, shape: "open", pupil: [1, 1], look: [0, 0] },
  mouth: { curve: 0.15, width: 1, open: 0 },
  cheeks: 0,
  colors: {},
});

/** Fetches /static/skins/NAME.json and checks it; resolves to the skin ready to draw. */
export async function loadSkin(name) {
  if (!NAME.test(name)) {
    throw new SkinError(name, ["a skin name is letters, digits, '-' and '_' (skin=puppet)"]);
  }
  // Relative to the page (/overlay), so a gateway behind a path prefix still works.
  const url = new URL(`static/skins/${name}.json`, location.href);
  let response;
  try {
    response = await fetch(url, { cache: "no-cache" });
  } catch (error) {
    throw new SkinError(name, [`cannot fetch ${url.pathname}: ${error.message}`]);
  }
  if (response.status === 404) {
    throw new SkinError(name, [
      `there is no ${url.pathname} (HTTP 404): use skin=puppet or skin=cat, or add ` +
        `${name}.json to services/gateway/pages/skins/ (docs/overlay.md)`,
    ]);
  }
  if (!response.ok) {
    throw new SkinError(name, [`GET ${url.pathname}: HTTP ${response.status}`]);
  }
  let raw;
  try {
    raw = JSON.parse(await response.text());
  } catch (error) {
    throw new SkinError(name, [`${url.pathname} is not JSON (${error.message})`]);
  }
  return checkSkin(raw, name);
}

/** Checks a parsed skin; returns it with defaults filled in, or throws SkinError. */
export function checkSkin(raw, name = "skin") {
  const problems = [];
  const bad = (field, problem) => {
    if (problems.length < MAX_PROBLEMS) problems.push(`${field}: ${problem}`);
  };
  if (!isObject(raw)) throw new SkinError(name, ["the file must hold a JSON object"]);
  if (raw.format !== FORMAT) bad("format", `must be "${FORMAT}" (got ${show(raw.format)})`);

  const colors = {};
  if (!isObject(raw.colors)) bad("colors", "an object of name: CSS colour");
  else {
    for (const [key, value] of Object.entries(raw.colors)) {
      if (!/^[a-zA-Z][a-zA-Z0-9]*$/.test(key)) bad(`colors.${key}`, "names are letters and digits");
      else if (!isColor(value)) bad(`colors.${key}`, `not a CSS colour (${show(value)})`);
      else colors[key] = value;
    }
  }
  // A colour reference: a palette name, a literal CSS colour, or "none".
  const paint = (field, value, optional = true) => {
    if (value === undefined || value === null) {
      if (!optional) bad(field, "a colour is needed");
      return null;
    }
    if (value === "none") return "none";
    if (typeof value === "string" && value in colors) return `var(--c-${value})`;
    if (isColor(value)) return value;
    bad(field, `neither a colour of "colors" nor a CSS colour (${show(value)})`);
    return null;
  };
  const num = (field, value, { min = -Infinity, max = Infinity, fallback } = {}) => {
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value)) {
      bad(field, `a number is needed (got ${show(value)})`);
      return fallback ?? 0;
    }
    if (value < min || value > max) bad(field, `${value} is outside ${min}..${max}`);
    return value;
  };
  const point = (field, value) => {
    if (!Array.isArray(value) || value.length !== 2) {
      bad(field, `[x, y] is needed (got ${show(value)})`);
      return [0, 0];
    }
    return [num(`${field}[0]`, value[0]), num(`${field}[1]`, value[1])];
  };

  const size = Array.isArray(raw.size) && raw.size.length === 2 ? raw.size : null;
  if (!size) bad("size", "[width, height] of the drawing is needed");
  const [width, height] = size
    ? [num("size[0]", size[0], { min: 1 }), num("size[1]", size[1], { min: 1 })]
    : [100, 100];

  const parts = [];
  if (!Array.isArray(raw.parts) || raw.parts.length === 0) bad("parts", "a list of shapes is needed");
  else {
    raw.parts.forEach((part, i) => {
      const at = `parts[${i}]`;
      if (!isObject(part)) return bad(at, "an object is needed");
      const kinds = ["path", "ellipse", "circle"].filter((k) => k in part);
      if (kinds.length !== 1) return bad(at, 'exactly one of "path", "ellipse", "circle"');
      const shape = { kind: kinds[0], name: typeof part.name === "string" ? part.name : "" };
      if (shape.kind === "path") {
        if (typeof part.path !== "string" || !PATH_DATA.test(part.path)) {
          return bad(`${at}.path`, "SVG path data (M, L, C, Q, A, Z... and numbers) is needed");
        }
        shape.d = part.path;
      } else {
        const want = shape.kind === "ellipse" ? 4 : 3;
        const values = part[shape.kind];
        if (!Array.isArray(values) || values.length !== want) {
          return bad(`${at}.${shape.kind}`, want === 4 ? "[cx, cy, rx, ry]" : "[cx, cy, r]");
        }
        shape.values = values.map((v, k) => num(`${at}.${shape.kind}[${k}]`, v));
      }
      shape.fill = paint(`${at}.fill`, part.fill) ?? "none";
      shape.stroke = paint(`${at}.stroke`, part.stroke) ?? "none";
      shape.width = num(`${at}.width`, part.width, { min: 0, fallback: 0 });
      shape.opacity = num(`${at}.opacity`, part.opacity, { min: 0, max: 1, fallback: 1 });
      shape.layer = part.layer === undefined ? "back" : part.layer;
      if (!["back", "front"].includes(shape.layer)) bad(`${at}.layer`, '"back" or "front"');
      parts.push(shape);
    });
  }

  let eyes = null;
  if (!isObject(raw.eyes)) bad("eyes", "an object is needed");
  else {
    const e = raw.eyes;
    eyes = {
      left: point("eyes.left", e.left),
      right: point("eyes.right", e.right),
      rx: num("eyes.rx", e.rx, { min: 0.1 }),
      ry: num("eyes.ry", e.ry, { min: 0.1 }),
      white: paint("eyes.white", e.white),
      iris: isObject(e.iris)
        ? {
            r: num("eyes.iris.r", e.iris.r, { min: 0 }),
            color: paint("eyes.iris.color", e.iris.color, false),
          }
        : (bad("eyes.iris", "{r, color} is needed"), { r: 0, color: "none" }),
      pupil: isObject(e.pupil)
        ? {
            rx: num("eyes.pupil.rx", e.pupil.rx, { min: 0 }),
            ry: num("eyes.pupil.ry", e.pupil.ry, { min: 0 }),
            color: paint("eyes.pupil.color", e.pupil.color, false),
          }
        : (bad("eyes.pupil", "{rx, ry, color} is needed"), { rx: 0, ry: 0, color: "none" }),
      highlight: e.highlight === undefined ? true : Boolean(e.highlight),
      line: paint("eyes.line", e.line ?? "#222", false),
      lineWidth: num("eyes.lineWidth", e.lineWidth, { min: 0, fallback: 4 }),
    };
  }

  let brows = null;
  if (raw.brows !== undefined && raw.brows !== null) {
    const b = raw.brows;
    if (!isObject(b)) bad("brows", "an object, or null for none");
    else {
      brows = {
        left: point("brows.left", b.left),
        right: point("brows.right", b.right),
        length: num("brows.length", b.length, { min: 1 }),
        thickness: num("brows.thickness", b.thickness, { min: 0.5 }),
        arch: num("brows.arch", b.arch, { fallback: 0 }),
        color: paint("brows.color", b.color, false),
      };
    }
  }

  let mouth = null;
  if (!isObject(raw.mouth)) bad("mouth", "an object is needed");
  else {
    const m = raw.mouth;
    mouth = {
      center: point("mouth.center", m.center),
      width: num("mouth.width", m.width, { min: 1 }),
      open: num("mouth.open", m.open, { min: 0 }),
      lip: paint("mouth.lip", m.lip, false),
      lipWidth: num("mouth.lipWidth", m.lipWidth, { min: 0, fallback: 4 }),
      inside: paint("mouth.inside", m.inside, false),
      tongue: paint("mouth.tongue", m.tongue),
      teeth: paint("mouth.teeth", m.teeth),
    };
  }

  let cheeks = null;
  if (raw.cheeks !== undefined && raw.cheeks !== null) {
    const c = raw.cheeks;
    if (!isObject(c)) bad("cheeks", "an object, or null for none");
    else {
      cheeks = {
        left: point("cheeks.left", c.left),
        right: point("cheeks.right", c.right),
        rx: num("cheeks.rx", c.rx, { min: 0 }),
        ry: num("cheeks.ry", c.ry, { min: 0 }),
        color: paint("cheeks.color", c.color, false),
      };
    }
  }

  const motion = isObject(raw.motion) ? raw.motion : {};
  const moves = {
    pivot: motion.pivot === undefined ? [width / 2, height] : point("motion.pivot", motion.pivot),
    breathe: num("motion.breathe", motion.breathe, { min: 0, fallback: 3 }),
    sway: num("motion.sway", motion.sway, { min: 0, max: 30, fallback: 1.5 }),
    nod: num("motion.nod", motion.nod, { min: 0, fallback: 4 }),
  };

  const expressions = {};
  if (!isObject(raw.expressions) || !isObject(raw.expressions.neutral)) {
    bad("expressions", 'an object with at least "neutral" is needed');
  } else {
    const neutral = expression("expressions.neutral", raw.expressions.neutral, NEUTRAL);
    expressions.neutral = neutral;
    for (const [key, value] of Object.entries(raw.expressions)) {
      if (key === "neutral") continue;
      if (!/^[a-z_]+$/.test(key)) bad(`expressions.${key}`, "names are a-z and _ (as avatar.expr's)");
      else expressions[key] = expression(`expressions.${key}`, value, neutral);
    }
  }
  const aliases = {};
  if (isObject(raw.aliases)) {
    for (const [key, value] of Object.entries(raw.aliases)) {
      if (!(value in expressions)) bad(`aliases.${key}`, `names no expression of this skin (${show(value)})`);
      else aliases[key] = value;
    }
  }

  // A scale or offset: one number for both axes, or [x, y].
  function pair(at, value, fallback, min, max) {
    if (value === undefined) return fallback;
    if (typeof value === "number") value = [value, value];
    if (!Array.isArray(value) || value.length !== 2) {
      bad(at, `a number or [x, y] is needed (got ${show(value)})`);
      return fallback;
    }
    return [num(`${at}[0]`, value[0], { min, max }), num(`${at}[1]`, value[1], { min, max })];
  }

  // An expression: each field as given, else as `base` (neutral) has it.
  function expression(at, value, base) {
    if (!isObject(value)) {
      bad(at, "an object is needed");
      return base;
    }
    const brows = isObject(value.brows) ? value.brows : {};
    const eyes = isObject(value.eyes) ? value.eyes : {};
    const mouth = isObject(value.mouth) ? value.mouth : {};
    const shape = eyes.shape ?? base.eyes.shape;
    if (!EYE_SHAPES.includes(shape)) bad(`${at}.eyes.shape`, `one of ${EYE_SHAPES.join(", ")}`);
    const tint = {};
    if (value.colors !== undefined) {
      if (!isObject(value.colors)) bad(`${at}.colors`, "an object of palette name: CSS colour");
      else {
        for (const [key, color] of Object.entries(value.colors)) {
          if (!(key in colors)) bad(`${at}.colors.${key}`, 'not a colour of the skin\'s "colors"');
          else if (!isColor(color)) bad(`${at}.colors.${key}`, `not a CSS colour (${show(color)})`);
          else tint[key] = color;
        }
      }
    }
    return {
      brows: {
        angle: num(`${at}.brows.angle`, brows.angle, { min: -45, max: 45, fallback: base.brows.angle }),
        raise: num(`${at}.brows.raise`, brows.raise, { fallback: base.brows.raise }),
      },
      eyes: {
        open: num(`${at}.eyes.open`, eyes.open, { min: 0, max: 2, fallback: base.eyes.open }),
        shape,
        pupil: pair(`${at}.eyes.pupil`, eyes.pupil, base.eyes.pupil, 0, 4),
        look: pair(`${at}.eyes.look`, eyes.look, base.eyes.look, -1, 1),
      },
      mouth: {
        curve: num(`${at}.mouth.curve`, mouth.curve, { min: -1, max: 1, fallback: base.mouth.curve }),
        width: num(`${at}.mouth.width`, mouth.width, { min: 0.1, max: 3, fallback: base.mouth.width }),
        open: num(`${at}.mouth.open`, mouth.open, { min: 0, max: 1, fallback: base.mouth.open }),
      },
      cheeks: num(`${at}.cheeks`, value.cheeks, { min: 0, max: 1, fallback: base.cheeks }),
      colors: { ...base.colors, ...tint },
    };
  }

  if (problems.length) throw new SkinError(name, problems);
  return {
    name: typeof raw.name === "string" && raw.name ? raw.name : name,
    file: name,
    width,
    height,
    colors,
    parts,
    eyes,
    brows,
    mouth,
    cheeks,
    motion: moves,
    expressions,
    aliases,
  };
}

/** The expression the skin draws for a tag: its own, an alias, else neutral. */
export function expressionOf(skin, tag) {
  if (tag in skin.expressions) return tag;
  if (tag in skin.aliases) return skin.aliases[tag];
  return "neutral";
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isColor(value) {
  return typeof value === "string" && value !== "" && CSS.supports("color", value);
}

function show(value) {
  const text = JSON.stringify(value);
  return text === undefined ? "nothing" : text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
