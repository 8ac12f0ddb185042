"""Model card (``MODEL_CARD.md``) of a bundle, rendered from its metadata with a Jinja2 template.

Headings are Spanish by default (``lang="es"``) or English (``lang="en"``). Every fact comes from
the metadata dict; missing fields render as "—". jinja2 is imported lazily (``train`` extra).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["HIGHER_IS_BETTER", "render_model_card", "write_model_card"]

_PERCENT_METRICS = frozenset(
    {"mape", "directional_accuracy", "naive_mape", "naive_directional_accuracy"}
)
_NAIVE_PREFIX = "naive_"
_DASH = "—"
_MAX_CATEGORIES = 8
_GAP_HIGHER = 0.05
_GAP_ERROR_RATIO = 1.25
_IMBALANCE_RATIO = 0.2
_SMALL_TEST = 100

# fmt: off
HIGHER_IS_BETTER = frozenset({
    "accuracy", "precision", "recall", "f1", "roc_auc", "r2", "directional_accuracy",
    "ndcg_at_k", "map_at_k",
})
_PLOT_STEMS = ("confusion_matrix", "roc_curve", "pr_curve", "calibration", "feature_importance",
               "residuals", "predicted_vs_actual", "explanations")
#: Every text of the card: key -> (Spanish, English).
_LABELS: dict[str, tuple[str, str]] = {
    "serving_runtime": ("Runtime de inferencia", "Serving runtime"),
    "onnx_verified": (
        "ONNX (onnxruntime), verificado contra scikit-learn en {rows} filas de test: "
        "diferencia máxima {diff}, tolerancia {tol}",
        "ONNX (onnxruntime), verified against scikit-learn on {rows} test rows: "
        "max difference {diff}, tolerance {tol}",
    ),
    "onnx_not_used": ("scikit-learn (sin ONNX: {reason})", "scikit-learn (no ONNX: {reason})"),
    "onnx_folded": (
        "; {count} árboles constantes sumados a los valores base del grafo",
        "; {count} constant trees folded into the graph's base values",
    ),
    "general": ("Información General", "General Information"),
    "description": ("Descripción", "Description"),
    "training_data": ("Datos de Entrenamiento", "Training Data"),
    "architecture": ("Arquitectura", "Architecture"),
    "hyperparameters": ("Hiperparámetros", "Hyperparameters"),
    "metrics": ("Métricas", "Metrics"),
    "limitations": ("Limitaciones", "Limitations"),
    "usage": ("Uso", "Usage"),
    "name": ("Nombre", "Name"), "version": ("Versión", "Version"), "task": ("Tarea", "Task"),
    "created_at": ("Creado", "Created"), "bundle_id": ("Bundle ID", "Bundle ID"),
    "model_type": ("Tipo de modelo", "Model type"),
    "mlservice": ("Versión de mlservice", "mlservice version"),
    "git_commit": ("Commit de git", "Git commit"),
    "mlflow_run": ("MLflow run ID", "MLflow run ID"),
    "mlflow_exp": ("Experimento MLflow", "MLflow experiment"),
    "mlflow_reg": ("Versión registrada en MLflow", "MLflow registered version"),
    "no_description": ("Sin descripción.", "No description provided."),
    "source": ("Fuente", "Source"), "sha256": ("Huella SHA-256", "SHA-256 fingerprint"),
    "dvc_md5": ("DVC md5", "DVC md5"), "n_rows": ("Filas", "Rows"),
    "dvc": ("Versión DVC", "DVC version"),
    "dvc_tracked": ("✅ coincide con su archivo `.dvc`; md5 {md5}",
                    "✅ matches its `.dvc` file; md5 {md5}"),
    "dvc_modified": (
        "⚠️ modificado desde `dvc add`: el archivo `.dvc` registra el md5 {md5}, que NO es el de "
        "los datos de entrenamiento (sin versión DVC de estos datos)",
        "⚠️ modified since `dvc add`: the `.dvc` file records md5 {md5}, which is NOT the md5 of "
        "the training data (no DVC version of this data)",
    ),
    "dvc_untracked": ("sin seguimiento DVC (no hay archivo `.dvc`)",
                      "not tracked by DVC (no `.dvc` file)"),
    "csv_read": ("Lectura del CSV", "CSV reading"),
    "detected": ("detectado", "detected"),
    "alias": ("{metric} (escrito `{alias}` en la configuración)",
              "{metric} (written as `{alias}` in the config)"),
    "n_columns": ("Columnas", "Columns"), "train_test": ("Train / test", "Train / test"),
    "split": ("Estrategia de partición", "Split strategy"),
    "target_col": ("Variable objetivo", "Target"),
    "class_balance": ("Balance de clases", "Class balance"),
    "class": ("Clase", "Class"), "share": ("Proporción", "Share"),
    "features": ("Variables de entrada", "Input features"),
    "feature": ("Variable", "Feature"), "type": ("Tipo", "Type"),
    "nullable": ("Admite nulos", "Nullable"),
    "domain": ("Categorías o rango", "Categories or range"),
    "yes": ("sí", "yes"), "no": ("no", "no"), "missing": ("faltante", "missing"),
    "more": ("más", "more"),
    "preprocessing": ("Preprocesamiento", "Preprocessing"),
    "encodings": ("Codificación de categóricas", "Categorical encoding"),
    "enc_onehot": ("one-hot", "one-hot"),
    "enc_target": (
        "target encoding (media del objetivo con validación cruzada interna; niveles raros "
        "suavizados hacia la media global, niveles no vistos = media global)",
        "target encoding (cross-fitted target mean; rare levels shrunk towards the global "
        "mean, unseen levels = the global mean)",
    ),
    "enc_ordinal": ("ordinal", "ordinal"),
    "levels": ("niveles", "levels"),
    "estimator": ("Estimador", "Estimator"),
    "param": ("Parámetro", "Parameter"), "value": ("Valor", "Value"),
    "no_params": ("Parámetros por defecto.", "Default parameters."),
    "metric": ("Métrica", "Metric"), "cv": ("CV (media ± std)", "CV (mean ± std)"),
    "target": ("Objetivo", "Target"), "met": ("Cumple", "Met"),
    "no_metrics": ("No hay métricas registradas.", "No metrics recorded."),
    "gate": ("Quality gate", "Quality gate"),
    "gate_pass": ("✅ superado: todos los objetivos se cumplen.",
                  "✅ passed: every target is met."),
    "gate_fail": ("❌ no superado; no alcanzan el objetivo:", "❌ failed; below target:"),
    "gate_none": ("sin evaluar (no hay objetivos registrados).",
                  "not evaluated (no targets recorded)."),
    "observed": ("observado", "observed"),
    "imbalance": (
        "Desbalance de clases: la clase minoritaria '{small}' es el {s} de los datos frente al "
        "{l} de '{large}'; las métricas globales pueden ocultar un mal rendimiento en ella.",
        "Class imbalance: the smallest class '{small}' is {s} of the data versus {l} for "
        "'{large}'; overall metrics may hide poor performance on it.",
    ),
    "small_test": (
        "Conjunto de test pequeño ({n} filas): las métricas de test tienen una incertidumbre "
        "alta.",
        "Small test set ({n} rows): test metrics are highly uncertain.",
    ),
    "overfit": (
        "Posible sobreajuste en {metric}: train = {train} frente a test = {test}.",
        "Possible overfitting on {metric}: train = {train} versus test = {test}.",
    ),
    "missing_feat": ("Variables con valores faltantes (imputados): {items}.",
                     "Features with missing values (imputed): {items}."),
    "not_met": ("Objetivos no cumplidos: {items}.", "Targets not met: {items}."),
    "none_found": (
        "No se detectó ninguna limitación a partir de los datos y métricas registrados.",
        "No limitation was detected from the recorded data and metrics.",
    ),
    "generic": (
        "El modelo solo se ha validado con datos similares a los de entrenamiento; su "
        "rendimiento con datos de otra distribución, población o periodo no está garantizado.",
        "The model was only validated on data like its training data; its performance on data "
        "from another distribution, population or period is not guaranteed.",
    ),
    "serve_intro": (
        "Servir el modelo como API REST (`<bundle>` es el directorio del bundle, el que "
        "contiene este archivo, p. ej. `data/models/{bundle_id}`):",
        "Serve the model as a REST API (`<bundle>` is the bundle directory, the one holding "
        "this file, e.g. `data/models/{bundle_id}`):",
    ),
    "curl_intro": ("Predecir con `POST /api/v1/predict`:", "Predict with `POST /api/v1/predict`:"),
    "python_intro": ("Uso desde Python:", "From Python:"),
    "date": ("Fecha", "Date"), "no_history": ("Sin historial.", "No history."),
    "passed": ("✅ superado", "✅ passed"), "failed": ("❌ no superado", "❌ failed"),
    # plot titles, by file stem
    "confusion_matrix": ("Matriz de confusión", "Confusion matrix"),
    "roc_curve": ("Curva ROC", "ROC curve"),
    "pr_curve": ("Curva precisión-recall", "Precision-recall curve"),
    "calibration": ("Calibración", "Calibration"),
    "feature_importance": ("Importancia de variables", "Feature importance"),
    "residuals": ("Residuos", "Residuals"),
    "explanations": (
        "Contribuciones por predicción (test; cada punto una fila)",
        "Per-prediction contributions (test part; one dot per row)",
    ),
    "explain_title": (
        "Explicaciones (contribuciones aditivas)", "Explanations (additive contributions)"
    ),
    "explain_intro": (
        "Media de |contribución| por variable en la parte de test, con el mismo cálculo que "
        "`POST /api/v1/explain` ({method}; salida explicada: {output}): base + suma = salida.",
        "Mean |contribution| per feature on the test part, computed as `POST /api/v1/explain` "
        "does ({method}; explained output: {output}): base + sum = output.",
    ),
    "explain_none": (
        "Sin explicaciones por predicción: {reason}.",
        "No per-prediction explanations: {reason}.",
    ),
    "mean_abs": ("media |contribución|", "mean |contribution|"),
    "predicted_vs_actual": ("Predicho vs real", "Predicted vs actual"),
    # time series: the naive last-value baseline
    "naive": ("Comparación con el pronóstico ingenuo", "Comparison with the naive forecast"),
    "naive_intro": (
        "Pronóstico ingenuo: el último valor conocido, y[t − {h}], sobre las mismas filas de "
        "test. No predice cambios, así que su acierto direccional es 0 salvo en tramos planos.",
        "Naive forecast: the last known value, y[t − {h}], on the same test rows. It predicts "
        "no change, so its directional accuracy is 0 except on flat stretches.",
    ),
    "model_test": ("Modelo (test)", "Model (test)"),
    "naive_test": ("Ingenuo (test)", "Naive (test)"),
    "better": ("Mejor", "Better"), "model_word": ("modelo", "model"),
    "naive_word": ("ingenuo", "naive"),
    "naive_beats": ("✅ El modelo supera al pronóstico ingenuo en {items}.",
                    "✅ The model beats the naive forecast on {items}."),
    "naive_loses": ("❌ El modelo no supera al pronóstico ingenuo: es peor o igual en {items}.",
                    "❌ The model does not beat the naive forecast: it is worse or equal on "
                    "{items}."),
}
# fmt: on
_LANGS = ("es", "en")
_TEXT: dict[str, dict[str, str]] = {
    lang: {key: pair[i] for key, pair in _LABELS.items()} for i, lang in enumerate(_LANGS)
}


def render_model_card(
    metadata: dict[str, Any], *, history: list[dict[str, Any]] | None = None, lang: str = "es"
) -> str:
    """Render the Markdown model card of a bundle from its ``metadata.json`` dict.

    ``history``: metadata dicts of older bundles of the same model, newest first.
    """
    if lang not in _TEXT:
        raise ValueError(f"unsupported language {lang!r}; use one of {sorted(_TEXT)}")
    from jinja2 import Environment, PackageLoader

    env = Environment(
        loader=PackageLoader("mlservice.reports", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("model_card.md.j2").render(**_context(metadata, history or [], lang))


def write_model_card(
    bundle_dir: Path,
    metadata: dict[str, Any],
    *,
    history: list[dict[str, Any]] | None = None,
    lang: str = "es",
) -> Path:
    """Render the card and write it atomically to ``bundle_dir/MODEL_CARD.md``; return the path."""
    bundle_dir = Path(bundle_dir)
    text = render_model_card(metadata, history=history, lang=lang)
    target = bundle_dir / "MODEL_CARD.md"
    fd, tmp_name = tempfile.mkstemp(dir=bundle_dir, prefix=".MODEL_CARD.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the card is a public document
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# --------------------------------------------------------------------------- context


def _context(meta: dict[str, Any], history: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    t = _TEXT[lang]
    metrics = _dict(meta.get("metrics"))
    targets = [x for x in _list(meta.get("targets")) if isinstance(x, dict)]
    bundle_id = meta.get("bundle_id") or "<bundle_id>"
    examples = {
        str(f.get("name")): _jsonable(f.get("example")) for f in _features(meta) if f.get("name")
    }
    primary = _primary_metric(meta)
    entries = [meta] + [
        old
        for old in history
        if not (meta.get("bundle_id") and old.get("bundle_id") == meta.get("bundle_id"))
    ]
    return {
        "h": {**t, "serve_intro": t["serve_intro"].format(bundle_id=bundle_id)},
        "name": _cell(meta.get("name") or "?"),
        "general": _general(meta, t),
        "description": str(meta.get("description") or "").strip() or t["no_description"],
        "data_facts": _data_facts(meta, t),
        "class_balance": _class_balance(meta),
        "features": [_feature_row(f, t) for f in _features(meta)],
        "architecture": _architecture(meta, t),
        "params": [
            (_cell(k), _cell(_value(v)))
            for k, v in sorted(_dict(_dict(meta.get("model")).get("params")).items())
        ],
        "metric_rows": _metric_rows(metrics, targets, t),
        "gate_line": _gate_line(meta, targets, t),
        "naive": _naive(meta, metrics, t),
        "explain": _explain(meta, t),
        "plots": [(_plot_title(str(p), lang), str(p)) for p in _list(meta.get("plots"))],
        "limitations": _limitations(meta, metrics, targets, t),
        "bundle_arg": "<bundle>",
        "curl_body": json.dumps({"features": examples}, ensure_ascii=False).replace("'", "'\\''"),
        "python_row": repr(examples),
        "changelog_metric": f"{primary} (test)" if primary else "Test",
        "changelog": [_changelog_row(e, primary, t) for e in entries],
    }


def _explain(meta: dict[str, Any], t: dict[str, str]) -> dict[str, Any] | None:
    """The global summary of the per-prediction contributions (none for older bundles)."""
    explain = _dict(meta.get("explain"))
    if not explain:
        return None
    if explain.get("unavailable"):
        return {"intro": t["explain_none"].format(reason=explain["unavailable"]), "rows": []}
    rows = [
        (_cell(f"`{item.get('feature')}`"), _value(item.get("mean_abs")), _pct(item.get("share")))
        for item in _list(explain.get("summary"))
        if isinstance(item, dict)
    ]
    intro = t["explain_intro"].format(method=explain.get("method"), output=explain.get("output"))
    return {"intro": intro, "rows": rows}


def _class_balance(meta: dict[str, Any]) -> list[tuple[str, str]]:
    if meta.get("task") != "classification":
        return []
    balance = _dict(_dict(meta.get("data")).get("class_balance"))
    return [(_cell(k), _pct(v)) for k, v in balance.items()]


def _general(meta: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    model = _dict(meta.get("model"))
    mlflow = _dict(meta.get("mlflow"))
    rows = [
        (t["name"], meta.get("name")),
        (t["version"], meta.get("version")),
        (t["task"], meta.get("task")),
        (t["created_at"], meta.get("created_at")),
        (t["bundle_id"], meta.get("bundle_id")),
        (t["model_type"], model.get("type")),
        (t["mlservice"], _dict(meta.get("versions")).get("mlservice")),
        (t["git_commit"], meta.get("git_commit")),
    ]
    out = [(label, _code(value)) for label, value in rows]
    for key, label in (
        ("run_id", "mlflow_run"),
        ("experiment", "mlflow_exp"),
        ("registered_version", "mlflow_reg"),
    ):
        if mlflow.get(key):
            out.append((t[label], _code(mlflow[key])))
    return out


def _data_facts(meta: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    data = _dict(meta.get("data"))
    split = _dict(meta.get("split"))
    fingerprint = _dict(data.get("fingerprint"))
    target = _dict(meta.get("target"))
    strategy = str(split.get("strategy") or _DASH)
    details = [f"{k}={split[k]}" for k in ("test_size", "seed") if split.get(k) is not None]
    rows = [
        (t["source"], _code(data.get("source"))),
        (t["sha256"], _code(fingerprint.get("sha256"))),
    ]
    rows += _dvc_rows(str(data.get("source") or ""), fingerprint, t)
    read = data.get("read")
    if isinstance(read, dict):
        rows.append((t["csv_read"], _csv_read(read, t)))
    rows += [
        (t["n_rows"], _cell(_value(data.get("n_rows")))),
        (t["n_columns"], _cell(_value(data.get("n_columns")))),
        (t["train_test"], f"{_value(split.get('n_train'))} / {_value(split.get('n_test'))}"),
        (t["split"], strategy + (f" ({', '.join(details)})" if details else "")),
        (t["target_col"], _code(target.get("name"))),
    ]
    return rows


def _dvc_rows(
    source: str, fingerprint: dict[str, Any], t: dict[str, str]
) -> list[tuple[str, str]]:
    state = fingerprint.get("dvc_state")
    if state is None:  # bundles written before the md5 was checked against the file
        md5 = fingerprint.get("dvc_md5")
        return [(t["dvc_md5"], _code(md5))] if md5 else []
    if state == "tracked":
        return [(t["dvc"], t["dvc_tracked"].format(md5=_code(fingerprint.get("dvc_md5"))))]
    if state == "modified":
        recorded = _code(fingerprint.get("dvc_recorded_md5"))
        return [(t["dvc"], t["dvc_modified"].format(md5=recorded))]
    if source.startswith("builtin:"):
        return []
    return [(t["dvc"], t["dvc_untracked"])]


def _csv_read(read: dict[str, Any], t: dict[str, str]) -> str:
    detected = {str(k) for k in _list(read.get("detected"))}
    parts = []
    for key in ("sep", "decimal", "thousands", "encoding"):
        value = read.get(key)
        if value is None:
            continue
        shown = "\\t" if value == "\t" else str(value)
        mark = f" ({t['detected']})" if key in detected else ""
        parts.append(f"{key} `{shown}`{mark}")
    return _cell(", ".join(parts)) or _DASH


def _feature_row(feature: dict[str, Any], t: dict[str, str]) -> dict[str, str]:
    nullable = t["yes"] if feature.get("nullable") else t["no"]
    missing = _num(feature.get("missing_fraction"))
    if missing:
        nullable += f" ({_pct(missing)} {t['missing']})"
    categories = feature.get("categories")
    if isinstance(categories, list) and categories:
        shown = ", ".join(str(c) for c in categories[:_MAX_CATEGORIES])
        if len(categories) > _MAX_CATEGORIES:
            shown += f", … (+{len(categories) - _MAX_CATEGORIES} {t['more']})"
        values = shown
    elif feature.get("min") is not None or feature.get("max") is not None:
        values = f"[{_value(feature.get('min'))}, {_value(feature.get('max'))}]"
    else:
        values = _DASH
    return {
        "name": _cell(f"`{feature.get('name')}`"),
        "type": _cell(feature.get("type") or _DASH),
        "nullable": nullable,
        "domain": _cell(values),
    }


def _architecture(meta: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    model = _dict(meta.get("model"))
    prep = _dict(meta.get("preprocessing"))
    used = {str(f.get("type")) for f in _features(meta)}
    kinds = [k for k in prep if k in used] or list(prep)
    rows = [(f"{t['preprocessing']} ({kind})", _steps(prep[kind])) for kind in kinds]
    encodings = _encodings(meta, t)
    if encodings:
        rows.append((t["encodings"], encodings))
    rows.append((t["model_type"], _code(model.get("type"))))
    rows.append((t["estimator"], _code(model.get("estimator"))))
    rows.append((t["serving_runtime"], _runtime(meta, t)))
    return rows


def _encodings(meta: dict[str, Any], t: dict[str, str]) -> str:
    """Each categorical feature's encoding and its number of levels in training."""
    chosen = _dict(_dict(meta.get("preprocessing")).get("encodings"))
    parts = []
    for feature in _features(meta):
        name = str(feature.get("name"))
        if name not in chosen:
            continue
        cats = feature.get("categories")
        count = feature.get("n_categories") or (len(cats) if isinstance(cats, list) else None)
        levels = f" ({count} {t['levels']})" if count else ""
        label = t.get(f"enc_{chosen[name]}", str(chosen[name]))
        parts.append(f"`{name}`{levels}: {label}")
    return _cell("; ".join(parts))


def _runtime(meta: dict[str, Any], t: dict[str, str]) -> str:
    onnx = _dict(meta.get("onnx"))
    if onnx.get("verified"):
        tol = ", ".join(f"{k} {v}" for k, v in _dict(onnx.get("tolerance")).items())
        diff = f"{onnx.get('max_abs_diff') or 0:.2g}"
        text = t["onnx_verified"].format(rows=onnx.get("verified_rows"), diff=diff, tol=tol)
        folded = _dict(onnx.get("optimizations")).get("constant_trees_folded")
        if isinstance(folded, int) and folded > 0:
            text += t["onnx_folded"].format(count=folded)
        return text
    return t["onnx_not_used"].format(reason=onnx.get("reason") or "not exported")


def _steps(steps: Any) -> str:
    if isinstance(steps, dict):
        return ", ".join(f"{k} = {_value(v)}" for k, v in steps.items()) or _DASH
    return _value(steps)


def _metric_rows(
    metrics: dict[str, Any], targets: list[dict[str, Any]], t: dict[str, str]
) -> list[dict[str, str]]:
    train, cv = _dict(metrics.get("train")), _dict(metrics.get("cv"))
    by_metric = {str(x.get("metric")): x for x in targets}
    rows = []
    for name, test_value in _dict(metrics.get("test")).items():
        if name.startswith(_NAIVE_PREFIX):
            continue  # shown beside the model in the naive comparison section
        fold = _dict(cv.get(name))
        target = by_metric.get(name)
        met = (
            _DASH
            if target is None or target.get("met") is None
            else ("✅" if target.get("met") else "❌")
        )
        alias = (target or {}).get("alias")
        label = t["alias"].format(metric=name, alias=alias) if alias else name
        rows.append(
            {
                "metric": _cell(label),
                "train": _metric(name, train.get(name)),
                "test": _metric(name, test_value),
                "cv": (
                    f"{_metric(name, fold.get('mean'))} ± {_fmt(fold.get('std'))}"
                    if fold.get("mean") is not None
                    else _DASH
                ),
                "target": _cell((target or {}).get("text") or _DASH),
                "met": met,
            }
        )
    return rows


def _naive(meta: dict[str, Any], metrics: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    """Model vs naive last-value forecast on the test rows (time series); empty otherwise."""
    test = _dict(metrics.get("test"))
    names = [n.removeprefix(_NAIVE_PREFIX) for n in test if n.startswith(_NAIVE_PREFIX)]
    if not names:
        return {}
    rows = []
    for name in names:
        model, naive = _num(test.get(name)), _num(test.get(_NAIVE_PREFIX + name))
        better = _DASH
        if model is not None and naive is not None and model != naive:
            model_wins = (model > naive) if name in HIGHER_IS_BETTER else (model < naive)
            better = t["model_word"] if model_wins else t["naive_word"]
        rows.append(
            {
                "metric": _cell(name),
                "model": _metric(name, test.get(name)),
                "naive": _metric(name, test.get(_NAIVE_PREFIX + name)),
                "better": better,
            }
        )
    comparison = _dict(meta.get("naive_comparison"))
    verdict = ""
    if comparison.get("beats_naive") is True:
        verdict = t["naive_beats"].format(items=", ".join(_list(comparison.get("better_on"))))
    elif comparison.get("beats_naive") is False:
        worse = _list(comparison.get("worse_on")) or _list(comparison.get("better_on"))
        verdict = t["naive_loses"].format(items=", ".join(str(w) for w in worse) or _DASH)
    horizon = _dict(meta.get("time_series")).get("horizon") or "h"
    return {"intro": t["naive_intro"].format(h=horizon), "rows": rows, "verdict": verdict}


def _gate_line(meta: dict[str, Any], targets: list[dict[str, Any]], t: dict[str, str]) -> str:
    gate = meta.get("gate")
    label = f"**{t['gate']}:**"
    if not isinstance(gate, dict) or gate.get("passed") is None:
        return f"{label} {t['gate_none']}"
    if gate.get("passed"):
        return f"{label} {t['gate_pass']}"
    failed = _failed_targets(gate, targets)
    return f"{label} {t['gate_fail']} {_describe_targets(failed, t) or _DASH}."


def _failed_targets(gate: dict[str, Any], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_metric = {str(x.get("metric")): x for x in targets}
    out = []
    for item in _list(gate.get("failed")):
        if isinstance(item, dict):
            out.append({**by_metric.get(str(item.get("metric")), {}), **item})
        else:
            out.append(by_metric.get(str(item), {"metric": str(item)}))
    return out or [x for x in targets if x.get("met") is False]


def _describe_targets(items: list[dict[str, Any]], t: dict[str, str]) -> str:
    parts = []
    for x in items:
        metric = str(x.get("metric"))
        detail = [f"{t['observed']} {_metric(metric, x['observed'])}"] if "observed" in x else []
        if x.get("text"):
            detail.append(f"{t['target'].lower()} {x['text']}")
        parts.append(f"{metric} ({', '.join(detail)})" if detail else metric)
    return "; ".join(parts)


def _limitations(
    meta: dict[str, Any],
    metrics: dict[str, Any],
    targets: list[dict[str, Any]],
    t: dict[str, str],
) -> list[str]:
    found: list[str] = []
    balance = {
        str(k): v
        for k, v in _dict(_dict(meta.get("data")).get("class_balance")).items()
        if _num(v) is not None
    }
    if meta.get("task") == "classification" and len(balance) >= 2:
        small = min(balance, key=lambda k: float(balance[k]))
        large = max(balance, key=lambda k: float(balance[k]))
        if float(balance[small]) < _IMBALANCE_RATIO * float(balance[large]):
            found.append(
                t["imbalance"].format(
                    small=small, large=large, s=_pct(balance[small]), l=_pct(balance[large])
                )
            )
    n_test = _num(_dict(meta.get("split")).get("n_test"))
    if n_test is not None and n_test < _SMALL_TEST:
        found.append(t["small_test"].format(n=int(n_test)))
    train, test = _dict(metrics.get("train")), _dict(metrics.get("test"))
    for name in test:
        a, b = _num(train.get(name)), _num(test.get(name))
        if a is None or b is None:
            continue
        if (a - b > _GAP_HIGHER) if name in HIGHER_IS_BETTER else (b > _GAP_ERROR_RATIO * a):
            found.append(
                t["overfit"].format(metric=name, train=_metric(name, a), test=_metric(name, b))
            )
    missing = [
        (str(f.get("name")), _num(f.get("missing_fraction")) or 0.0) for f in _features(meta)
    ]
    missing = [(n, m) for n, m in missing if m > 0]
    if missing:
        found.append(
            t["missing_feat"].format(items=", ".join(f"`{n}` ({_pct(m)})" for n, m in missing))
        )
    not_met = [x for x in targets if x.get("met") is False]
    if not_met:
        found.append(t["not_met"].format(items=_describe_targets(not_met, t)))
    return (found or [t["none_found"]]) + [t["generic"]]


def _primary_metric(meta: dict[str, Any]) -> str | None:
    for x in _list(meta.get("targets")):
        if isinstance(x, dict) and x.get("metric"):
            return str(x["metric"])
    test = _dict(_dict(meta.get("metrics")).get("test"))
    return next(iter(test), None)


def _changelog_row(entry: dict[str, Any], metric: str | None, t: dict[str, str]) -> dict[str, str]:
    metric = metric or _primary_metric(entry)
    test = _dict(_dict(entry.get("metrics")).get("test"))
    passed = _dict(entry.get("gate")).get("passed")
    return {
        "date": _cell(str(entry.get("created_at") or _DASH)[:10]),
        "version": _cell(entry.get("version") or _DASH),
        "bundle_id": _code(entry.get("bundle_id")),
        "value": _metric(metric, test.get(metric)) if metric else _DASH,
        "gate": _DASH if passed is None else (t["passed"] if passed else t["failed"]),
    }


def _plot_title(path: str, lang: str) -> str:
    stem = Path(path).stem
    return _TEXT[lang][stem] if stem in _PLOT_STEMS else stem.replace("_", " ").capitalize()


# --------------------------------------------------------------------------- formatting


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _features(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in _list(meta.get("features")) if isinstance(f, dict)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _fmt(value: Any) -> str:
    """A number with 4 decimals (significant digits for tiny values); ``—`` when missing."""
    if value is None:
        return _DASH
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.4f}"


def _metric(name: str, value: Any) -> str:
    text = _fmt(value)
    if name in _PERCENT_METRICS and _num(value) is not None:
        text += f" ({float(value) * 100:.2f}%)"
    return text


def _pct(value: Any) -> str:
    number = _num(value)
    return _DASH if number is None else f"{number * 100:.1f}%"


def _value(value: Any) -> str:
    if value is None:
        return _DASH
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _code(value: Any) -> str:
    return _DASH if value in (None, "") else f"`{_cell(str(value)).replace('`', '')}`"


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (one line, escaped pipes)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
