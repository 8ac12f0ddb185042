"""ONNX conversion of scikit-learn's ``TargetEncoder`` for every target type.

skl2onnx 1.20 converts a ``TargetEncoder`` fitted on a binary or continuous target only; a
multiclass target (the penguins' three species) raises ``NotImplementedError``, so a
high-cardinality categorical would push a multiclass model off the fast engine. The encoding is
a lookup table either way — each category of each column maps to one number per class (one in
all for binary and continuous targets), unseen categories to the target's mean — which the ONNX
``LabelEncoder`` (ai.onnx.ml) computes exactly (as float32). This converter writes one
``LabelEncoder`` per column and class, in the order scikit-learn concatenates them (columns
major, then classes), and replaces skl2onnx's for all target types. Written by hand because no
converter library covers the multiclass case; verified like every export against
scikit-learn on the test rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["register_float32_values", "register_target_encoder"]

_MARK = "_mlservice_target_encoder"


def _width(encoder: Any) -> int:
    """Output columns per input column: one per class for a multiclass target, else one."""
    if encoder.target_type_ == "multiclass":
        return len(encoder.classes_)
    return 1


def _shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    encoder = operator.raw_operator
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([rows, len(encoder.categories_) * _width(encoder)])


def _column(scope: Any, container: Any, inputs: list[Any], index: int) -> str:
    """The name of input column ``index`` (inputs may be one [N, F] tensor or F [N, 1] ones)."""
    from skl2onnx.proto import onnx_proto

    if len(inputs) > 1:
        return str(inputs[index].onnx_name)
    source = inputs[0]
    if source.get_second_dimension() == 1:
        return str(source.onnx_name)
    position = scope.get_unique_variable_name("column_index")
    container.add_initializer(position, onnx_proto.TensorProto.INT64, [], [index])
    column = scope.get_unique_variable_name("column")
    container.add_node(
        "ArrayFeatureExtractor",
        [source.onnx_name, position],
        column,
        op_domain="ai.onnx.ml",
        name=scope.get_unique_operator_name("ArrayFeatureExtractor"),
    )
    return str(column)


def _convert(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.common._apply_operation import apply_concat, apply_reshape

    encoder = operator.raw_operator
    width = _width(encoder)
    means = np.atleast_1d(np.asarray(encoder.target_mean_, dtype=np.float64))
    keys_of = [np.array([str(c).encode("utf-8") for c in cats]) for cats in encoder.categories_]
    outputs = []
    for i, keys in enumerate(keys_of):
        column = _column(scope, container, list(operator.inputs), i)
        for j in range(width):
            encoded = scope.get_unique_variable_name("target_encoded")
            container.add_node(
                "LabelEncoder",
                column,
                encoded,
                op_domain="ai.onnx.ml",
                op_version=2,
                name=scope.get_unique_operator_name("LabelEncoder"),
                keys_strings=keys,
                values_floats=np.asarray(encoder.encodings_[i * width + j], dtype=np.float32),
                default_float=float(means[j if means.size > 1 else 0]),
            )
            shaped = scope.get_unique_variable_name("target_column")
            apply_reshape(scope, encoded, shaped, container, desired_shape=(-1, 1))
            outputs.append(shaped)
    apply_concat(scope, outputs, operator.outputs[0].full_name, container, axis=1)


def register_target_encoder() -> None:
    """Replace skl2onnx's ``TargetEncoder`` converter by this one (idempotent)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common._registration import get_converter
    from sklearn.preprocessing import TargetEncoder

    if getattr(get_converter("SklearnTargetEncoder")._fct, _MARK, False):
        return

    def convert(scope: Any, operator: Any, container: Any) -> None:
        _convert(scope, operator, container)

    setattr(convert, _MARK, True)
    update_registered_converter(TargetEncoder, "SklearnTargetEncoder", _shapes, convert)


def _same_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    source = operator.inputs[0]
    operator.outputs[0].type = FloatTensorType(
        [source.get_first_dimension(), source.get_second_dimension()]
    )


def _convert_float32(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.common._apply_operation import apply_cast
    from skl2onnx.proto import onnx_proto

    apply_cast(
        scope,
        operator.inputs[0].full_name,
        operator.outputs[0].full_name,
        container,
        to=onnx_proto.TensorProto.FLOAT,
    )


def register_float32_values() -> None:
    """``Float32Values`` is a cast to float32 in the graph (where values already are)."""
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map

    from mlservice.pipelines.features import Float32Values

    if Float32Values not in sklearn_operator_name_map:
        update_registered_converter(
            Float32Values, "MlserviceFloat32Values", _same_shape, _convert_float32
        )
