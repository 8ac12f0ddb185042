"""CSV files from spreadsheets: ';' separators, ',' decimals, Windows-1252 text, end to end.

The files are written by the tests in the exact bytes a Spanish-locale spreadsheet exports
(``año;superficie m²;barrio;precio (€)`` with values like ``1.234,5``), then trained on,
scored with ``mlservice predict`` and evaluated with ``mlservice evaluate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlservice.cli import app
from mlservice.config import DataConfig, ReadOptions
from mlservice.data import load_dataset
from mlservice.data.reading import resolve_csv_options, sniff_separator
from mlservice.errors import ConfigError, DataError
from mlservice.inference import Predictor
from tests.conftest import make_config

runner = CliRunner()

COLUMNS = ["año", "superficie m²", "barrio", "precio (€)"]
TARGET = "precio (€)"
UPLIFT = {"Salamanca": 1.6, "Chamberí": 1.4, "Tetuán": 0.9, "Vallecas": 0.8}


def _flats(n: int, seed: int) -> pd.DataFrame:
    """A real-estate table: price grows with the area, the year and the neighbourhood."""
    rng = np.random.default_rng(seed)
    area = np.round(rng.uniform(35, 250, n), 1)
    year = rng.integers(1960, 2023, n)
    barrio = rng.choice(list(UPLIFT), n)
    uplift = np.array([UPLIFT[b] for b in barrio])
    price = area * 3_200 * uplift + (year - 1960) * 900 + rng.normal(0, 15_000, n)
    return pd.DataFrame(
        {"año": year, "superficie m²": area, "barrio": barrio, "precio (€)": np.round(price, 2)}
    )


def _spanish_number(value: float, decimals: int) -> str:
    """``1234.5`` -> ``'1.234,50'``: '.' groups thousands, ',' marks decimals."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def _write_spanish_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The bytes a Spanish-locale spreadsheet exports: ';', '1.234,5', Windows-1252."""
    decimals = {"superficie m²": 1, "precio (€)": 2}
    lines = [";".join(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if column in decimals:
                cells.append(_spanish_number(float(value), decimals[column]))
            else:
                cells.append(str(value))
        lines.append(";".join(cells))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


SPANISH_READ = {"decimal": ",", "thousands": "."}


@pytest.fixture(scope="module")
def spanish_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_spanish_csv(_flats(400, seed=0), tmp_path_factory.mktemp("es") / "pisos.csv")


def test_the_fixture_file_is_what_a_spreadsheet_writes(spanish_csv: Path) -> None:
    raw = spanish_csv.read_bytes()
    header = raw.split(b"\r\n", 1)[0]
    assert header == "año;superficie m²;barrio;precio (€)".encode("cp1252")
    assert b"\x80" in header  # '€' in Windows-1252: not valid UTF-8
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert any("." in line and "," in line for line in raw.decode("cp1252").splitlines()[1:])


# --------------------------------------------------------------------------- config


def test_data_read_options_are_parsed() -> None:
    config = make_config(
        Path("/tmp"),
        **{
            "data.read": {
                "sep": "tab",
                "decimal": ",",
                "thousands": ".",
                "encoding": "Windows-1252",
                "na_values": ["-", "n/d"],
            }
        },
    )
    read = config.data.read
    assert read is not None
    assert (read.sep, read.decimal, read.thousands, read.encoding) == ("\t", ",", ".", "cp1252")
    assert read.given() == {
        "sep": "\t",
        "decimal": ",",
        "thousands": ".",
        "encoding": "cp1252",
        "na_values": ["-", "n/d"],
    }
    assert ReadOptions(sep="\\t").sep == "\t"  # a YAML '\t' in single quotes


def test_bad_data_read_options_are_all_reported_with_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(Path("/tmp"), **{"data.read": {"sepp": ";", "decimal": "·", "encoding": "x"}})
    problems = dict(info.value.problems)
    assert problems["data.read.sepp"] == (
        "unknown key (did you mean 'sep'?); allowed here: sep, decimal, thousands, encoding, "
        "quotechar, na_values"
    )
    assert problems["data.read.decimal"] == "must be '.' or ',', got '·'"
    assert problems["data.read.encoding"].startswith("unknown encoding")
    assert problems["data.read.encoding"].endswith("got 'x'")


@pytest.mark.parametrize(
    ("read", "path", "message"),
    [
        ({"sep": ";;"}, "data.read.sep", "must be one character"),
        ({"decimal": ",", "thousands": ","}, "data.read", "decimal and thousands must differ"),
        ({"sep": ","} | SPANISH_READ, "data.read", "sep and decimal must differ, got ','"),
    ],
)
def test_contradictory_read_options_are_refused(
    read: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(Path("/tmp"), **{"data.read": read})
    problems = dict(info.value.problems)
    assert message in problems[path]


def test_read_options_on_a_parquet_source_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(Path("/tmp"), **{"data.source": "x.parquet", "data.read": {"sep": ";"}})
    assert info.value.problems == [
        ("data.read", "reader options apply to CSV files only, not 'x.parquet'; remove them")
    ]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("año;superficie m²;precio (€)\n2001;85,5;1.234,5\n2002;90,0;2.000,0\n", ";"),
        ("a;b\n1,5;2,5\n3,5;4,5\n", ";"),  # ',' decimals split every row alike, not the header
        ("a\tb\tc\n1\t2\t3\n", "\t"),
        ("a|b\n1|2\n", "|"),
        ('name,comment\n"Smith, J.","said ""hi""; left"\nDoe,ok\n', ","),
        ("only\n1\n2\n", None),
    ],
)
def test_sniff_separator(sample: str, expected: str | None) -> None:
    assert sniff_separator(sample) == expected


def test_sniffing_never_picks_the_decimal_mark(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,5\n2,5\n", encoding="utf-8")  # reads as two columns with sep ','
    assert resolve_csv_options(path).sep == ","
    assert resolve_csv_options(path, {"decimal": ","}).sep != ","


def test_cp1252_file_is_detected_and_read_with_the_config_marks(spanish_csv: Path) -> None:
    config = DataConfig(source=str(spanish_csv), target=TARGET, read=ReadOptions(**SPANISH_READ))
    dataset = load_dataset(config)
    frame = dataset.frame
    assert list(frame.columns) == COLUMNS
    assert frame["precio (€)"].dtype == np.float64
    assert frame["superficie m²"].dtype == np.float64
    expected = _flats(400, seed=0)
    np.testing.assert_allclose(frame["precio (€)"], expected["precio (€)"])
    assert set(frame["barrio"]) == set(UPLIFT)  # 'Chamberí', 'Tetuán' decoded right
    assert dataset.read == {
        "sep": ";",
        "decimal": ",",
        "thousands": ".",
        "encoding": "cp1252",
        "quotechar": '"',
        "na_values": None,
        "detected": ["encoding", "sep"],
    }
    notes = " ".join(dataset.notes)
    assert "not valid UTF-8; read as cp1252" in notes
    assert "separated by ';' (detected)" in notes


def test_excel_utf8_with_bom_reads_a_clean_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffaño;precio (€)\r\n2001;12,5\r\n2002;13,5\r\n".encode())
    dataset = load_dataset(
        DataConfig(source=str(path), target="precio (€)", read=ReadOptions(decimal=","))
    )
    assert list(dataset.frame.columns) == ["año", "precio (€)"]
    assert dataset.frame["precio (€)"].tolist() == [12.5, 13.5]
    assert dataset.read is not None and dataset.read["encoding"] == "utf-8"
    assert not any("UTF-8" in note for note in dataset.notes)


def test_numbers_read_as_text_get_a_note_naming_the_options(spanish_csv: Path) -> None:
    dataset = load_dataset(DataConfig(source=str(spanish_csv), target=TARGET))
    # '295.027,60' is not a number with the default '.' decimal mark: the column is text
    assert not pd.api.types.is_numeric_dtype(dataset.frame["precio (€)"])
    hints = [n for n in dataset.notes if "precio (€)" in n]
    assert hints == [
        "column 'precio (€)' holds numbers written like "
        f"{dataset.frame['precio (€)'].iloc[0]!r} and was read as text: set data.read.decimal: "
        "',' in the config and set data.read.thousands: '.' in the config"
    ]


def test_regression_on_a_text_target_says_which_option_fixes_it(
    spanish_csv: Path, tmp_path: Path
) -> None:
    from mlservice.training import train

    config = make_config(
        tmp_path,
        task="regression",
        **{
            "data": {"source": str(spanish_csv), "target": TARGET},
            "model": {"type": "ridge", "params": {}},
            "targets": {"r2": ">= 0.5"},
        },
    )
    with pytest.raises(DataError, match=r"must be numeric for task 'regression', got '") as info:
        train(config, base_dir=tmp_path)
    assert "set data.read.decimal: ',' in the config" in str(info.value)


# --------------------------------------------------------------------------- one column


def test_a_file_read_as_one_column_names_the_separator_to_set(spanish_csv: Path) -> None:
    config = DataConfig(source=str(spanish_csv), target=TARGET, read=ReadOptions(sep="|"))
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert "was read as one column 'año;superficie m²;barrio;precio (€)'" in message
    assert message.endswith("set data.read.sep: ';' in the config")


def test_a_tab_file_read_with_semicolons_names_the_tab(tmp_path: Path) -> None:
    path = tmp_path / "tabs.csv"
    _flats(30, seed=1).to_csv(path, sep="\t", index=False, encoding="utf-8")
    config = DataConfig(source=str(path), target=TARGET, read=ReadOptions(sep=";"))
    with pytest.raises(DataError, match=r"set data\.read\.sep: '\\t' in the config$"):
        load_dataset(config)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def spanish_bundle(spanish_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("es-train")
    config = make_config(
        tmp,
        name="pisos",
        task="regression",
        **{
            "data": {"source": str(spanish_csv), "target": TARGET, "read": SPANISH_READ},
            "model": {"type": "ridge", "params": {"alpha": 1.0}},
            "targets": {"r2_score": ">= 0.8"},
        },
    )
    result = train(config, base_dir=tmp)
    assert result.gate.passed, result.metadata["metrics"]["test"]
    assert any("read as cp1252" in note for note in result.warnings)
    return result.bundle_path


def test_training_records_the_read_options_and_the_accented_features(
    spanish_bundle: Path,
) -> None:
    meta = json.loads((spanish_bundle / "metadata.json").read_text(encoding="utf-8"))
    assert meta["data"]["read"]["sep"] == ";"
    assert meta["data"]["read"]["encoding"] == "cp1252"
    assert meta["data"]["read"]["detected"] == ["encoding", "sep"]
    assert meta["feature_names"] == ["año", "superficie m²", "barrio"]
    assert meta["targets"][0]["metric"] == "r2" and meta["targets"][0]["alias"] == "r2_score"
    assert meta["metrics"]["test"]["r2"] > 0.8
    card = (spanish_bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "- **Lectura del CSV:** sep `;` (detectado), decimal `,`, thousands `.`" in card
    assert "| r2 (escrito `r2_score` en la configuración) |" in card


def _expected_predictions(bundle: Path, frame: pd.DataFrame) -> np.ndarray:
    predictor = Predictor.from_path(bundle, runtime="sklearn")
    return np.asarray(predictor.bundle.pipeline.predict(frame[list(predictor.feature_names)]))


def test_predict_reads_a_spreadsheet_file_like_the_training_file(
    spanish_bundle: Path, tmp_path: Path
) -> None:
    new = _flats(120, seed=5).drop(columns=[TARGET])
    new.insert(0, "referencia", [f"piso-{i}" for i in range(len(new))])
    source = _write_spanish_csv(new, tmp_path / "nuevos.csv")
    out = tmp_path / "predicciones.csv"
    result = runner.invoke(app, ["predict", str(spanish_bundle), str(source), str(out),
                                 "--id-column", "referencia"])
    assert result.exit_code == 0, result.output
    assert "scored 120 rows" in result.output
    scored = pd.read_csv(out)
    assert scored["referencia"].tolist() == new["referencia"].tolist()
    expected = _expected_predictions(spanish_bundle, new)
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9)


def test_predict_options_override_the_training_read(
    spanish_bundle: Path, tmp_path: Path
) -> None:
    new = _flats(50, seed=6).drop(columns=[TARGET])
    plain = tmp_path / "plain.csv"
    new.to_csv(plain, index=False, encoding="utf-8")  # ',' separated, '.' decimals
    out = tmp_path / "out.csv"
    result = runner.invoke(
        app, ["predict", str(spanish_bundle), str(plain), str(out), "--decimal", "."]
    )
    assert result.exit_code == 0, result.output
    expected = _expected_predictions(spanish_bundle, new)
    np.testing.assert_allclose(pd.read_csv(out)["prediction"].to_numpy(), expected, rtol=1e-9)


def test_predict_with_a_wrong_separator_says_which_option_fixes_it(
    spanish_bundle: Path, spanish_csv: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["predict", str(spanish_bundle), str(spanish_csv), str(tmp_path / "o.csv"),
              "--sep", "|"]
    )
    assert result.exit_code == 2
    assert "read as one column 'año;superficie m²;barrio;precio (€)'" in result.output
    assert "pass --sep ';'" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_reads_the_labelled_spreadsheet_file(
    spanish_bundle: Path, tmp_path: Path
) -> None:
    labelled = _write_spanish_csv(_flats(150, seed=9), tmp_path / "etiquetados.csv")
    result = runner.invoke(app, ["evaluate", str(spanish_bundle), str(labelled)])
    assert result.exit_code == 0, result.output
    assert "targets met" in result.output
    assert "r2 (r2_score)" in result.output
    wrong = runner.invoke(
        app, ["evaluate", str(spanish_bundle), str(labelled), "--encoding", "utf-8"]
    )
    assert wrong.exit_code == 2
    assert "cannot decode" in wrong.output and "--encoding 'cp1252'" in wrong.output


def test_eda_reads_the_file_with_the_config_options(spanish_csv: Path, tmp_path: Path) -> None:
    from mlservice.commands.eda import eda_report_for_config

    config = make_config(
        tmp_path,
        task="regression",
        **{
            "data": {"source": str(spanish_csv), "target": TARGET, "read": SPANISH_READ},
            "model": {"type": "ridge", "params": {}},
            "targets": {"r2": ">= 0.5"},
        },
    )
    notes: list[str] = []
    report = eda_report_for_config(config, base_dir=tmp_path, sample_rows=100, notes=notes)
    assert report.n_columns == 4
    kinds = {c.name: c.type for c in report.columns}
    assert kinds["superficie m²"] == "numeric" and kinds["barrio"] == "categorical"
    assert report.target_stats is not None
    assert any("read as cp1252" in note for note in notes)
