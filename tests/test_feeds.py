"""Input synthesis and input checking (onnxbit.feeds) on small real models run
in onnxruntime: symbolic dims shared across inputs, -1 / 0 dims, embedding
tables, masks, position ids, and models no synthesized size fits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbit.feeds import (FeedError, check_feeds, input_specs, load_feeds, plan_feeds, synthesize_feeds,
                           synthesize_working_feed)

F, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              initializer=[numpy_helper.from_array(np.asarray(a), name) for name, a in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    return model


def _negative_dims_input(model: onnx.ModelProto, name: str, axes: dict[int, int]) -> None:
    """helper.make_tensor_value_info refuses dim_value <= 0 on some versions: set them directly."""
    value = next(v for v in model.graph.input if v.name == name)
    for axis, size in axes.items():
        dim = value.type.tensor_type.shape.dim[axis]
        dim.Clear()
        dim.dim_value = size


def _session(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _working_feed(model):
    session = _session(model)
    feed, notes = synthesize_working_feed(model, lambda f: session.run(None, f))
    session.run(None, feed)  # really runs
    return feed, notes


def test_a_symbolic_dim_shared_by_two_inputs_gets_one_size():
    # x [rows, k] @ y [k, rows]: the old synthesizer gave x [1, 16] and y [1, 16].
    model = _model([helper.make_node("MatMul", ["x", "y"], ["z"])],
                   [("x", F, ["rows", "k"]), ("y", F, ["k", "rows"])], [("z", F, ["rows", "rows"])])
    feed, _ = _working_feed(model)
    assert feed["x"].shape[1] == feed["y"].shape[0]
    assert feed["x"].shape[0] == feed["y"].shape[1]
    assert feed["x"].dtype == np.float32


def test_minus_one_and_zero_dims_are_unknown_and_pinned_by_consumers():
    # x [-1, -1] @ W[12, 5] + b[0, 5]: K comes from the weight, b's rows from the Add.
    model = _model([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                   [("x", F, [1, 1]), ("b", F, [1, 5])], [("y", F, None)],
                   initializers=[("W", np.ones((12, 5), np.float32))])
    _negative_dims_input(model, "x", {0: -1, 1: -1})
    _negative_dims_input(model, "b", {0: 0})
    assert [d for d in input_specs(model)[0].dims] == [None, None]
    feed, _ = _working_feed(model)
    assert feed["x"].shape[1] == 12
    assert feed["b"].shape == (feed["x"].shape[0], 5)
    # onnxruntime holds a declared 0 to 0: sizes of 0 are tried after the others.
    assert feed["b"].shape[0] == 0


def test_concat_ties_unknown_dims_of_different_roles():
    # p [2, ?] and q [?]: Concat(p, Unsqueeze(q), axis 0) needs the two ? equal,
    # although by position one looks like a feature dim and the other a batch.
    model = _model([helper.make_node("Unsqueeze", ["q", "zero"], ["q2"]),
                    helper.make_node("Concat", ["p", "q2"], ["y"], axis=0)],
                   [("p", F, [2, 1]), ("q", F, [1])], [("y", F, None)],
                   initializers=[("zero", np.array([0], np.int64))])
    _negative_dims_input(model, "p", {1: -1})
    _negative_dims_input(model, "q", {0: -1})
    feed, _ = _working_feed(model)
    assert feed["p"].shape[1] == feed["q"].shape[0]


def _embedding_model() -> onnx.ModelProto:
    """Token ids (int32, cast) into a 7-row table, position ids into a 10-row
    table, token types into a 2-row table, a mask multiplying the sum."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids64"], to=I64),
        helper.make_node("Gather", ["tokens", "ids64"], ["e"]),
        helper.make_node("Gather", ["positions", "position_ids"], ["p"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
        helper.make_node("Add", ["e", "p"], ["ep"]),
        helper.make_node("Add", ["ep", "t"], ["ept"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=F),
        helper.make_node("Unsqueeze", ["mf", "last"], ["m"]),
        helper.make_node("Mul", ["ept", "m"], ["hidden_states"]),
        helper.make_node("MatMul", ["hidden_states", "head"], ["logits"]),
    ]
    seq = ["batch", "sequence"]
    return _model(nodes, [("input_ids", I32, seq), ("position_ids", I64, seq), ("token_type_ids", I64, seq),
                          ("attention_mask", I64, seq)],
                  [("hidden_states", F, ["batch", "sequence", 4]), ("logits", F, ["batch", "sequence", 7])],
                  initializers=[("tokens", rng.standard_normal((7, 4)).astype(np.float32)),
                                ("positions", rng.standard_normal((10, 4)).astype(np.float32)),
                                ("types", rng.standard_normal((2, 4)).astype(np.float32)),
                                ("head", rng.standard_normal((4, 7)).astype(np.float32)),
                                ("last", np.array([-1], np.int64))])


def test_embedding_ids_masks_positions_and_token_types():
    model = _embedding_model()
    plan = plan_feeds(model)
    assert plan.index_bound == {"input_ids": 7, "position_ids": 10, "token_type_ids": 2}
    feed, _ = _working_feed(model)
    ids, positions = feed["input_ids"], feed["position_ids"]
    assert ids.dtype == np.int32 and 0 <= ids.min() and ids.max() < 7
    assert ids.shape == positions.shape == feed["attention_mask"].shape == feed["token_type_ids"].shape
    # 16 tokens by default, capped by the 10-row position table.
    assert ids.shape == (1, 10)
    assert (positions == np.arange(10)).all()
    assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()
    # batch/seq overrides still apply (below the cap).
    assert synthesize_feeds(model, batch=3, seq=5)["input_ids"].shape == (3, 5)


def test_alternative_sizes_are_tried_when_the_first_fails():
    # Reshape to [-1, 32] needs a sequence length that is a multiple of 32.
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [("x", F, [1, "seq"])], [("y", F, None)],
                   initializers=[("shape", np.array([-1, 32], np.int64))])
    with pytest.raises(Exception):
        _session(model).run(None, synthesize_feeds(model))  # the default size really fails
    feed, notes = _working_feed(model)
    assert feed["x"].shape[1] % 32 == 0
    assert any("rejected" in note for note in notes) and any("x [1, " in note for note in notes)


def test_no_size_fits_raises_one_line_naming_the_input():
    model = _model([helper.make_node("Reshape", ["pixels", "shape"], ["y"])],
                   [("pixels", F, ["batch", "seq"]), ("other", F, [3])], [("y", F, None)],
                   initializers=[("shape", np.array([7, 13], np.int64))])
    session = _session(model)
    with pytest.raises(FeedError) as info:
        synthesize_working_feed(model, lambda f: session.run(None, f))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot synthesize input 'pixels'")
    assert message.endswith("pass --inputs FILE.npz")


def test_unsupported_element_type_names_the_input():
    model = _model([helper.make_node("Identity", ["s"], ["y"])], [("s", TensorProto.STRING, [1])],
                   [("y", TensorProto.STRING, [1])])
    with pytest.raises(FeedError, match="input 's' of ONNX element type STRING; pass --inputs FILE.npz"):
        synthesize_feeds(model)


def test_dim_expressions_are_evaluated():
    model = _model([helper.make_node("ReduceSum", ["past_key"], ["a"]),
                    helper.make_node("ReduceSum", ["attention_mask"], ["b"])],
                   [("past_key", F, ["batch", 2, "past_sequence_length", 4]),
                    ("attention_mask", I64, ["batch", "past_sequence_length + 1"])],
                   [("a", F, None), ("b", I64, None)])
    feed = synthesize_feeds(model)
    assert feed["attention_mask"].shape[1] == feed["past_key"].shape[2] + 1


def test_check_feeds_names_missing_inputs_wrong_dtypes_and_shapes(tmp_path):
    specs = input_specs(_embedding_model())
    good = synthesize_feeds(_embedding_model(), batch=2, seq=4)
    check_feeds([good], specs, "x.npz")
    missing = {k: v for k, v in good.items() if k != "position_ids"}
    with pytest.raises(FeedError, match=r"x.npz lacks the model input\(s\) \['position_ids'\]"):
        check_feeds([missing], specs, "x.npz")
    with pytest.raises(FeedError, match="input 'input_ids' is int64, the model wants int32"):
        check_feeds([dict(good, input_ids=good["input_ids"].astype(np.int64))], specs, "x.npz")
    with pytest.raises(FeedError, match=r"input 'attention_mask' has shape \[2, 4, 1\], the model wants "
                                        r"\[batch, sequence\]"):
        check_feeds([dict(good, attention_mask=good["attention_mask"][..., None])], specs, "x.npz")
    fixed = input_specs(_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, ["batch", 64])],
                               [("y", F, None)]))
    with pytest.raises(FeedError, match=r"\(input batch 1\): input 'x' has shape \[3, 63\]"):
        check_feeds([{"x": np.zeros((3, 64), np.float32)}, {"x": np.zeros((3, 63), np.float32)}], fixed, "f.npz")


def test_load_feeds_refuses_files_that_are_no_npz(tmp_path):
    path = tmp_path / "inputs.npz"
    path.write_text("not a zip")
    with pytest.raises(FeedError, match="cannot read inputs .*inputs.npz"):
        load_feeds(path, ["x"])
    np.savez(path, y=np.zeros(3))
    with pytest.raises(FeedError, match=r"missing \['x'\]"):
        load_feeds(path, ["x"])


def test_a_vit_like_model_gets_the_image_size_its_position_table_needs():
    # 16x16 patches plus a 196-row position embedding: only 224x224 images fit.
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["pixel_values", "patch"], ["c"], strides=[16, 16], kernel_shape=[16, 16]),
             helper.make_node("Reshape", ["c", "flat"], ["f"]),
             helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Add", ["t", "pos"], ["last_hidden_state"])]
    model = _model(nodes, [("pixel_values", F, ["batch_size", "num_channels", "height", "width"])],
                   [("last_hidden_state", F, None)],
                   initializers=[("patch", rng.standard_normal((8, 3, 16, 16)).astype(np.float32)),
                                 ("flat", np.array([0, 8, -1], np.int64)),
                                 ("pos", rng.standard_normal((1, 196, 8)).astype(np.float32))])
    feed, _ = _working_feed(model)
    assert feed["pixel_values"].shape[1:] == (3, 224, 224)  # channels from the Conv weight


def test_guessed_image_sizes_are_said_with_the_size_used():
    """A CNN with dynamic height and width is timed on synthesized 32x32 images: the notes say the
    size was a guess (nudenet's detector looked 0.7 ms fast); a fixed-size input gets no such note."""
    rng = np.random.default_rng(3)
    weight = [("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]
    conv = [helper.make_node("Conv", ["images", "w"], ["y"])]
    dynamic = _model(conv, [("images", F, ["batch", 3, "height", "width"])], [("y", F, None)], initializers=weight)
    feed, notes = _working_feed(dynamic)
    assert feed["images"].shape == (1, 3, 32, 32)
    assert any(n.startswith("(image sizes guessed: images at 32;") and "--inputs" in n for n in notes), notes
    fixed = _model(conv, [("images", F, [1, 3, 16, 16])], [("y", F, None)], initializers=weight)
    assert not any("guessed" in n for n in _working_feed(fixed)[1])


def test_a_decoder_with_past_gets_a_mask_as_long_as_past_plus_new_tokens():
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["e"]),
             helper.make_node("Reshape", ["e", "split_heads"], ["r"]),
             helper.make_node("Transpose", ["r"], ["new_key"], perm=[0, 2, 1, 3]),
             helper.make_node("Concat", ["past_key_values.0.key", "new_key"], ["present.0.key"], axis=2),
             helper.make_node("ReduceSum", ["present.0.key", "last"], ["s"], keepdims=0),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=F),
             helper.make_node("Unsqueeze", ["mf", "one"], ["m"]),
             helper.make_node("Mul", ["s", "m"], ["logits"])]
    model = _model(nodes, [("input_ids", I64, ["batch_size", "sequence_length"]),
                           ("attention_mask", I64, ["batch_size", "past_sequence_length + sequence_length"]),
                           ("past_key_values.0.key", F, ["batch_size", 2, "past_sequence_length", 4])],
                   [("logits", F, None), ("present.0.key", F, None)],
                   initializers=[("table", rng.standard_normal((20, 8)).astype(np.float32)),
                                 ("split_heads", np.array([0, 0, 2, 4], np.int64)),
                                 ("last", np.array([-1], np.int64)), ("one", np.array([1], np.int64))])
    feed, notes = _working_feed(model)
    past, ids = feed["past_key_values.0.key"].shape[2], feed["input_ids"].shape[1]
    assert past > 0 and feed["attention_mask"].shape == (1, past + ids)
    assert feed["input_ids"].max() < 20
    assert not any("rejected" in note for note in notes)  # right the first time
