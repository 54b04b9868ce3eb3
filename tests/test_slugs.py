"""Slug rules: the date and title a slug implies, and the slugs imports make."""

from __future__ import annotations

from datetime import date

import pytest

from memoryd.slugs import MAX_SLUG_BYTES, date_from_slug, short_id, slug_for, title_from_slug


@pytest.mark.parametrize(
    ("slug", "title"),
    [
        ("2025-06-25__orage_codé_textuel", "orage codé textuel"),
        ("2025-06-25-orage", "orage"),
        ("2025-06-25_a__b", "a b"),
        ("plain-slug_name", "plain-slug name"),
        ("2025-06-25", "2025-06-25"),
        ("2025-06-25__", "2025-06-25__"),
    ],
)
def test_title_from_slug(slug: str, title: str) -> None:
    """The slug minus date and separators, `_` as spaces; the slug if nothing is left."""
    assert title_from_slug(slug) == title


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("2025-06-25__x", date(2025, 6, 25)),
        ("2025-06-25", date(2025, 6, 25)),
        ("2025-13-40__x", None),
        ("2025-02-30", None),
        ("x_2025-06-25", None),
        ("2025-06-250", None),
    ],
)
def test_date_from_slug(slug: str, expected: date | None) -> None:
    """A leading valid YYYY-MM-DD is the date; anything else is no date, never an error."""
    assert date_from_slug(slug) == expected


@pytest.mark.parametrize(
    ("created", "title", "slug"),
    [
        (date(2025, 6, 25), "Orage codé textuel", "2025-06-25__orage_codé_textuel"),
        (date(2025, 6, 25), "a/b\\c: d?*<>|\"e'f", "2025-06-25__a_b_c_d_e_f"),
        (date(2025, 6, 25), "tab\there\nnew\x00line\x7f\u200b", "2025-06-25__tab_here_new_line"),
        (date(2025, 6, 25), "  🎉🎉  ", "2025-06-25__untitled"),
        (date(2025, 6, 25), "", "2025-06-25__untitled"),
        (None, "Résumé", "undated__résumé"),
        (date(2025, 6, 25), "Cafe\u0301 ÉTÉ", "2025-06-25__café_été"),
        (date(2025, 6, 25), "日本語 の テスト", "2025-06-25__日本語_の_テスト"),
        (date(2025, 6, 25), "../../etc/passwd", "2025-06-25__etc_passwd"),
        (date(2025, 6, 25), ".hidden", "2025-06-25__hidden"),
    ],
)
def test_slug_for(created: date | None, title: str, slug: str) -> None:
    """Slugs are date__lower_case_words: any script, no separators, controls or invisible characters (NFC)."""
    assert slug_for(created, title) == slug


@pytest.mark.parametrize("title", ["word " * 40, "é" * 100, "日本語" * 30, "x" * 500])
def test_long_titles_are_cut_by_bytes(title: str) -> None:
    """A slug never exceeds MAX_SLUG_BYTES bytes, suffix included, and never cuts a character in half."""
    for suffix in ("", "6a1c2b3d"):
        slug = slug_for(date(2025, 1, 1), title, suffix=suffix)
        assert len(slug.encode("utf-8")) <= MAX_SLUG_BYTES
        assert slug.endswith(f"__{suffix}" if suffix else "")
        assert not slug.endswith("_" if not suffix else "___")


def test_words_are_cut_at_a_boundary() -> None:
    """A long title loses whole words where it can."""
    slug = slug_for(date(2025, 1, 1), "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi")
    assert slug == "2025-01-01__alpha_beta_gamma_delta_epsilon_zeta_eta_theta_iota_kappa_lambda_mu"


@pytest.mark.parametrize(
    ("conversation_id", "expected"),
    [("6a1c2b3d-1111-4000-8000-000000000001", "6a1c2b3d"), ("ABC-def-123", "abcdef12")],
)
def test_short_id(conversation_id: str, expected: str) -> None:
    """The short id is the id's first letters and digits, lower-cased."""
    assert short_id(conversation_id) == expected


def test_short_id_of_odd_ids_is_a_hash() -> None:
    """An id with too few letters and digits is hashed: still stable and filesystem-safe."""
    assert short_id("é/é") == short_id("é/é")
    assert short_id("é/é").isalnum()
    assert len(short_id("é/é")) == 8
