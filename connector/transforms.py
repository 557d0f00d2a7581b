"""Value transforms a mapping can name: ``transform = ["trim", "phone"]``.

Each takes a value (or ``None``) and returns the normalised value or ``None`` when there is
nothing usable; none of them raises on bad data, because one customer's odd phone number must
not stop a sync. Phones become E.164 with libphonenumber, countries ISO 3166-1 alpha-2
(and Kosovo's user-assigned ``XK``).

Some read a value by the conventions of a country (:data:`REGIONAL`): a mapping builds them
for its ``default_region`` and reads the field again in the person's own country where it
knows it (``connector.mapping``).
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, cast

import phonenumbers
import pycountry

from connector.model import INVISIBLE

__all__ = [
    "REGIONAL",
    "TRANSFORMS",
    "Transform",
    "chain",
    "forget_phones",
    "make_transform",
    "run_chain",
    "text_chain",
]

Transform = Callable[[Any], Any]


def _collapsed(text: str) -> str:
    """``text`` with its blanks made single spaces and invisible characters dropped (a
    zero-width space copied along with an address went to every system, as another
    address than the one the person is known by: see :data:`connector.model.INVISIBLE`)."""
    if not text.isascii():
        text = text.translate(INVISIBLE)
    return " ".join(text.split())


def _not_text(value: Any) -> Any:
    """What a text transform gives a value that is no text: none for a yes/no, the value
    itself for any other (a number is read as its text before, see ``connector.mapping``).

    A shop built on PHP writes ``false`` for a field it holds nothing in, and a plugin may
    put ``true`` where a name or a city belongs: passed on, a CRM was sent ``false`` as the
    person's first name (HubSpot keeps it as the text "false").
    """
    return None if isinstance(value, bool) else value


def _trim(value: Any) -> Any:
    if isinstance(value, str):
        stripped = _collapsed(value)
        return stripped or None
    return _not_text(value)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else _not_text(value)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else _not_text(value)


def _name(value: Any, *, leading_particle: bool = False) -> Any:
    """Collapse spaces; fix ALL-CAPS or all-lower names, leave mixed case ("van der Berg").

    With ``leading_particle`` a particle the name begins with keeps its capital, as Belgians
    write it ("DE SMET" is "De Smet", "VAN DEN BROECK" "Van den Broeck"); the particles after
    it are in lower case as ever.
    """
    if not isinstance(value, str):
        return _not_text(value)
    if not value.isascii():  # _collapsed, written out: it runs for two fields of every record
        value = value.translate(INVISIBLE)
    text = " ".join(value.split())
    if not text:
        return None
    # German capitals are typed with "ß" (its capital "ẞ" has no key), a lower-case letter:
    # by str.isupper "WEIß" is mixed case, and it was sent on in capitals.
    if text.isupper() or text.islower() or ("ß" in text and text.replace("ß", "").isupper()):
        words = text.split(" ")
        out: list[str] = []
        for index, word in enumerate(words):
            parts = [_capitalised(part) for part in word.split("-")]
            if index < len(words) - 1:
                # A particle before the rest of the name, alone or after a hyphen
                # ("JANSEN-VAN DER BERG": "Jansen-van der Berg"); a "la" after such a "de"
                # too ("JANSEN-DE LA CRUZ": "Jansen-de la Cruz").
                before = _lower_name(words[index - 1].rpartition("-")[2]) if index else ""
                leads = leading_particle and index == 0 and len(parts) == 1
                if not leads and _is_particle(_lower_name(word.split("-")[-1]), before):
                    parts[-1] = _lower_name(parts[-1])
            out.append("-".join(parts))
        return " ".join(out)
    return text


def _belgian_name(value: Any) -> Any:
    """:func:`_name` as Belgians write names: the particle a surname begins with is part of
    it, capitalised ("De Smet", "Van Damme"), where the Dutch write "de Smet"."""
    return _name(value, leading_particle=True)


#: Name particles written in lower case before the rest of a name ("VAN DER BERG" is
#: "van der Berg"): the Dutch tussenvoegsels and their German kin, and the French, Spanish
#: and Portuguese "de", "du", "dos"... One standing alone is a name itself, capitalised. The
#: French "Le"/"La" and the Italian "Di"/"Della" keep their capital ("Le Pen", "Di Maio").
_PARTICLES = frozenset(
    {
        "van", "der", "den", "de", "het", "'t", "te", "ten", "ter", "in", "op", "aan",
        "uit", "bij", "von", "zu", "vom", "zum", "du", "des", "da", "dos", "das", "del", "y",
        "\u2019t",  # "'t" with the typographic apostrophe (see _APOSTROPHES)
    }
)  # fmt: skip


def _is_particle(word: str, before: str) -> bool:
    # "la" only as part of "de la" (the Spanish "de la Cruz"; French "La Fontaine" stands
    # alone and keeps its capital).
    return word in _PARTICLES or (word in ("la", "las", "los") and before == "de")


_VOWELS = frozenset("aeiouy")

#: The apostrophe as typed: ASCII, or the typographic U+2019 that phones put in its place
#: (iOS smart punctuation); kept as the person typed it.
_APOSTROPHES = re.compile("(['\u2019])")


def _capitalised(word: str) -> str:
    """One word of an ALL-CAPS or all-lower name as it is written.

    The Dutch digraph is one letter: "IJSBRAND IJZERMAN" is "IJsbrand IJzerman", not
    "Ijsbrand" (before a vowel it is no digraph: "IJAZ" is "Ijaz"). After a one-letter
    prefix and an apostrophe the name goes on capitalised ("O'BRIEN", "D'ANGELO":
    "O'Brien", "D'Angelo"); after a longer part, or a leading apostrophe ("'T HOOFT":
    "'t Hooft"), in lower case. A first letter whose capital is two letters (a ligature
    such as "ﬁ") takes its title case, not "FI". Initials keep their capitals: each part
    after a dot begins a name again ("J.P." is "J.P.", not "J.p.").
    """
    if "." in word:
        return ".".join(_capitalised(part) for part in word.split("."))
    apostrophe = "'" in word or "\u2019" in word
    rest = _lower_name(word[2:])
    if _lower_name(word[:2]) == "ij" and rest[:1] not in _VOWELS:
        return "IJ" + rest
    if _lower_name(word[:2]) == "mc" and len(rest) > 1 and not apostrophe:
        return "Mc" + _initial(rest)  # "MCDONALD" is "McDonald"
    if not apostrophe:
        return _initial(word)
    # Parts and the apostrophes between them: ["O", "'", "BRIEN"].
    pieces = _APOSTROPHES.split(word)
    out = [_initial(pieces[0])]
    for index in range(2, len(pieces), 2):
        before, part = pieces[index - 2], pieces[index]
        out += [pieces[index - 1], _initial(part) if len(before) == 1 else _lower_name(part)]
    return "".join(out)


def _initial(part: str) -> str:
    if not part[:1].isalnum() and part:
        # The capital goes on the first letter, after a bracket, a quote or a direction
        # mark the part begins with: "(JAN)" was "(jan)", the name without its capital.
        # A digit is passed over by none of them: "3rd" stays "3rd", never "3Rd".
        start = next((i for i, c in enumerate(part) if c.isalnum()), len(part))
        return part[:start] + _initial(part[start:])
    first = part[:1]
    # An upper-case first letter is kept as it is (a Turkish "İ" stays dotted).
    if first.isupper():
        return first + _lower_name(part[1:])
    title = first.title()
    # So is one whose capital begins with a letter without case: that of "ŉ" is U+02BC (a
    # letter apostrophe) and "N", whose "N" is lowered when read again, so the name
    # changed on every read.
    return (title if len(title) < 2 or title[0].isupper() else first) + _lower_name(part[1:])


def _lower_name(text: str) -> str:
    """Lower case, with a Turkish dotted capital I as "i": ``str.lower`` makes it an "i" and
    a combining dot above ("İSMAİL" became "İsmai̇l", sent so to every system)."""
    return text.lower().replace("i\u0307", "i")


def _postcode(value: Any) -> Any:
    """Blanks collapsed, in capitals: otherwise as typed (each country writes its own)."""
    return _trimmed_upper(value) if isinstance(value, str) else _not_text(value)


#: A Dutch postcode without its space, once collapsed and in capitals ("1234AB"); the letters
#: ASCII ones only, so nothing else that happens to be six characters long is rewritten.
_DUTCH_POSTCODE_UNSPACED = re.compile(r"[1-9][0-9]{3}[A-Z]{2}")


def _dutch_postcode(value: Any) -> Any:
    """:func:`_postcode`, with a Dutch postcode as PostNL writes it: "1234 AB".

    "1234AB" and "1234ab" were sent as typed, so one person's postcode was another text in
    each system (and another from the rest of a destination's records). "1234 ab" and
    "1234  AB" are "1234 AB" once collapsed and in capitals; only the space left out remains.
    """
    return _dutch_postcode_text(value) if isinstance(value, str) else _not_text(value)


def _dutch_postcode_text(text: str) -> Any:
    # _trimmed_upper written out: it runs for every record of a Dutch shop.
    if not text.isascii():
        text = text.translate(INVISIBLE)
    postcode = " ".join(text.split()).upper()
    if len(postcode) == 6 and _DUTCH_POSTCODE_UNSPACED.fullmatch(postcode):
        return f"{postcode[:4]} {postcode[4:]}"
    return postcode or None


def _phone_for(region: str) -> Transform:
    def to_e164(value: Any) -> Any:
        if not isinstance(value, str):
            return None
        text = value.strip()
        return _e164(text, region) if text else None

    return to_e164


def _e164(text: str, region: str) -> str | None:
    fast = _e164_national(text, region)
    found = cast("str | None", fast) if fast is not _UNSURE else _e164_by_parser(text, region)
    plain = _plain(text)
    if plain.startswith("00") and not _dials_double_zero(region):
        return _e164_double_zero(plain, region, found)
    return found


@lru_cache(maxsize=512)
def _dials_double_zero(region: str) -> bool:
    """Whether ``region`` dials "00" before a country code: the parser then read a number
    written so as international already."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
    idd = metadata.international_prefix if metadata is not None else None
    return idd is not None and re.fullmatch(idd, "00") is not None


def _e164_double_zero(text: str, region: str, found: str | None) -> str | None:
    """``found`` (``text`` read in ``region``), or ``text`` read as "+" and what follows its
    "00" where only that reading is a valid number.

    Most of the world dials "00" before a country code, and people write their number so
    wherever they live: a Dutch customer whose shop account says US types "0031 6
    12345678", and the US dials 011, so read there it was no number (or, in Japan or
    Australia, a possible but invalid one) and was not sent. A number valid as dialled in
    ``region`` stays as it is: there the "00" belongs to it.
    """
    if found is not None and _valid(found):
        return found
    international = _e164_by_parser("+" + text[2:].lstrip(" -."), region)
    if international is not None and _valid(international):
        return international
    return found


def _valid(e164: str) -> bool:
    """Whether ``e164`` is in a number range its country uses (not only of a possible length)."""
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(e164)))
    except phonenumbers.NumberParseException:
        return False


#: An extension after the number in the words the parser does not know (it reads "ext.",
#: "x", "#" and their kin itself): Dutch "toestel"/"tst.", German "Durchwahl", French
#: "poste". With one of these the parser read no number at all.
_EXTENSION_WORD = re.compile(
    r"(?:\(\s*)?(?<![a-z])(?:toestel|tst|durchwahl|poste)\.?\s*(?:[:.]\s*)?[0-9]{1,7}\s*\)?$",
    re.IGNORECASE,
)


#: A word or two in brackets after the number, saying whose or which it is: "(mobiel)",
#: "(werk)", "(privé)". The parser reads three letters or more as the letters of a vanity
#: number ("0800-FLOWERS"), so with one of these it read a number too long to be any.
_LABEL = re.compile(r"\(\s*[^\W\d_]+(?:\s+[^\W\d_]+)?\.?\s*\)$")


def _main_number(text: str) -> str:
    """``text`` without an extension written in words the parser does not read (E.164 has
    no extension, so the number is the main one, as with "ext. 12"), or a label in
    brackets after it."""
    found = _EXTENSION_WORD.search(text)
    if found:
        return text[: found.start()].rstrip(" ,;")
    label = _LABEL.search(text) if text.endswith(")") else None
    return text[: label.start()].rstrip() if label else text


# Only what the parser reads is kept, to read each such number once per process: the fast
# path below costs less than a cache would (a first sync's numbers are all new, and a shop
# of more customers than the cache holds missed it on every sync), and leaves no customer's
# number in memory.
@lru_cache(maxsize=4096)
def _e164_by_parser(text: str, region: str) -> str | None:
    return _e164_parsed(_main_number(_plain(text)), region)


def _plain(text: str) -> str:
    """``text`` with each run of blanks one space and format characters dropped.

    The parser reads a plain or no-break space between digits, but no other blank: a tab or
    line break pasted from a spreadsheet, the thin and narrow no-break spaces that
    typesetting and some phones' number formatting put between groups, and no invisible
    mark either (a byte order mark, the direction marks copied along from a right-to-left
    text). With one of them inside, the number was read as none, and not sent.
    """
    if text.isascii() and text.isprintable():
        return text  # nearly every number: nothing to change
    shown = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return " ".join(shown.split())


#: What a number must be to have an E.164 form: possible as a whole, not only when dialled
#: locally (IS_POSSIBLE_LOCAL_ONLY: a number without its area code).
_WHOLE_NUMBER = phonenumbers.ValidationResult.IS_POSSIBLE


def _e164_parsed(text: str, region: str) -> str | None:
    """The reference: libphonenumber's full parser (about 30 us a number)."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    # The US "555-1234" (no area code) is possible locally only: "+15551234" is nobody's.
    if phonenumbers.is_possible_number_with_reason(number) != _WHOLE_NUMBER:
        return None
    e164 = str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    if number.italian_leading_zero or _prefix_in_front(number):
        # A national prefix typed after the country code ("+31 (0)06 ...") is kept as a
        # leading zero; read again, the result loses it. So does one that is no zero
        # (Belarus's "8"), which the parser takes off once only ("880 ..." was +37580...,
        # which read again is +375 0...). The transform must give the same when run on its
        # own output (a destination's copy read back, `dsr erase --phone`), so the number
        # is read until it stays the same: where the digits belong (Italy's "+39 06 ..."),
        # at once.
        for _ in range(3):
            again = _e164_parsed(e164, region) if e164 != text else e164
            if again is None or again == e164:
                break
            e164 = again
    return e164


def _prefix_in_front(number: phonenumbers.PhoneNumber) -> bool:
    """Whether the national digits of ``number`` (with no leading zero: see
    ``italian_leading_zero``) begin with what its country's parser takes for a national
    prefix: read again from E.164, the parser would take it off."""
    prefix = _national_prefix(number.country_code or 0)
    return prefix is not None and prefix.match(str(number.national_number)) is not None


@lru_cache(maxsize=512)
def _national_prefix(code: int) -> re.Pattern[str] | None:
    """What the parser takes off a national number of calling code ``code`` as its
    national prefix, or ``None`` where it takes off nothing."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    prefix = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(prefix) if prefix else None


# -- the fast path for national numbers ---------------------------------------------------------
#
# Shops hold phones mostly as the customer typed them at checkout: national digits with spaces
# or hyphens ("06 12345678"). libphonenumber's parser spends most of its time on what such a
# number does not have (plus signs, letters, extensions, RFC 3966 context, Unicode digits), and
# each one is unique, so a cache does not help. For exactly that form, and for regions whose
# national prefix is a plain digit string, the steps below are the ones ``phonenumbers.parse``
# takes (``_maybe_extract_country_code``, ``_maybe_strip_national_prefix_carrier_code``, the
# length test of ``is_possible_number``) written for digits only: the national significant
# number is then the digit string itself, leading zeros included, so its length is that
# string's. Anything else is left to the parser. tests/connector/test_transforms.py checks the
# two agree over many generated numbers.

_UNSURE: Any = object()
# Runs of digits, one space or hyphen between two: written as runs, not as a digit or a
# separator that looks ahead, it matches in half the time (it runs for every phone read).
_NATIONAL_DIGITS = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_NOT_POSSIBLE = frozenset(
    {
        phonenumbers.ValidationResult.TOO_SHORT,
        phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        phonenumbers.ValidationResult.INVALID_LENGTH,
    }
)


@dataclass(frozen=True)
class _Plan:
    """What the fast path needs to know of a region's numbering plan."""

    country_code: int
    national_prefix: str
    general: re.Pattern[str]
    idd: re.Pattern[str] | None
    #: The region's possible lengths of a national number, and those only dialled locally.
    lengths: tuple[int, ...]
    local_lengths: frozenset[int]

    def fit(self, national: str) -> int:
        """``phonenumbers.is_possible_number_with_reason`` for a national number of the region.

        The library's test (``_test_number_length`` for an unknown type) goes by the length of
        the national significant number alone, against the region's general description: the
        same test here, on lengths read once, without building a ``PhoneNumber`` and looking up
        its metadata again (~7 us of the ~8 a number took).
        """
        length = len(national)
        if length in self.local_lengths:
            return phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY
        lengths = self.lengths
        if lengths[0] == length:
            return phonenumbers.ValidationResult.IS_POSSIBLE
        if lengths[0] > length:
            return phonenumbers.ValidationResult.TOO_SHORT
        if lengths[-1] < length:
            return phonenumbers.ValidationResult.TOO_LONG
        if length in lengths[1:]:
            return phonenumbers.ValidationResult.IS_POSSIBLE
        return phonenumbers.ValidationResult.INVALID_LENGTH


@lru_cache(maxsize=512)
def _plan(region: str) -> _Plan | None:
    """The region's plan, or ``None`` where only the full parser will do."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
    if metadata is None or metadata.general_desc is None or metadata.country_code is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    general = metadata.general_desc.national_number_pattern
    lengths = tuple(metadata.general_desc.possible_length or ())
    if (
        not prefix
        or not prefix.isdecimal()
        or metadata.national_prefix_transform_rule
        or general is None
        or not lengths
        # Length tests go by the main region of a calling code (+1 is the US's, not Canada's).
        or phonenumbers.region_code_for_country_code(metadata.country_code) != region.upper()
    ):
        return None
    idd = re.compile(metadata.international_prefix) if metadata.international_prefix else None
    local = frozenset(metadata.general_desc.possible_length_local_only or ())
    return _Plan(metadata.country_code, prefix, re.compile(general), idd, lengths, local)


def _e164_national(text: str, region: str) -> Any:
    """E.164 for a national number of plain digits, ``None`` if impossible, else ``_UNSURE``."""
    if len(text) > 40 or _NATIONAL_DIGITS.fullmatch(text) is None:
        return _UNSURE
    plan = _plan(region)
    if plan is None:
        return _UNSURE
    digits = text.replace(" ", "").replace("-", "")
    if (
        not 4 <= len(digits) <= 17
        or (plan.idd is not None and plan.idd.match(digits))
        or digits.startswith(str(plan.country_code))
    ):
        return _UNSURE  # international prefix or country code in front: the parser decides
    national = digits
    fit = None
    if digits.startswith(plan.national_prefix):
        stripped = digits[len(plan.national_prefix) :]
        keep = plan.general.fullmatch(digits) and not plan.general.fullmatch(stripped)
        if not keep and stripped:
            fit = plan.fit(stripped)
            if fit in _NOT_POSSIBLE:
                fit = None
            else:
                national = stripped
    if len(national) < 2:
        return None
    if national[0] == "0":
        # A zero left in front ("00712 345678" in Kenya, whose international prefix is "000")
        # is a leading zero to the parser, which reads its answer again until it is stable
        # (+254712345678, see _e164_parsed); kept here it was +2540712345678.
        return _UNSURE
    if fit is None:  # the number kept is not the one just tested
        fit = plan.fit(national)
    if fit != _WHOLE_NUMBER:
        return None  # a number dialled only locally has no E.164 form (see _e164_parsed)
    return f"+{plan.country_code}{national}"


#: Names people write that ISO 3166 does not give (or gives as another code): the Dutch
#: names of the shop's neighbours, and common English ones ("UK" is reserved, not GB's code).
_COUNTRY_NAMES = {
    "nederland": "NL",
    "holland": "NL",
    "the netherlands": "NL",
    "belgië": "BE",
    "belgie": "BE",
    "belgique": "BE",
    "duitsland": "DE",
    "deutschland": "DE",
    "frankrijk": "FR",
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    # ... and as the neighbours write them (ISO's translations give only the state's name).
    "engeland": "GB",
    "schotland": "GB",
    "groot-brittannie": "GB",
    "groot brittannie": "GB",
    "grossbritannien": "GB",
    "großbritannien": "GB",
    "england (uk)": "GB",
    "angleterre": "GB",
    "grande-bretagne": "GB",
    "amerika": "US",
    "vs": "US",
    "usa": "US",
    "u.s.a.": "US",
    "america": "US",
    # English names in common use that ISO 3166 has since changed or never used.
    "turkey": "TR",
    "russia": "RU",
    "macedonia": "MK",
    "ivory coast": "CI",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "vatican": "VA",
    "vatican city": "VA",
    "palestine": "PS",
    "brunei": "BN",
    "moldavia": "MD",
    "micronesia": "FM",
    "falkland islands": "FK",
    "macau": "MO",
    "dr congo": "CD",
    "east timor": "TL",
    # The Caribbean parts of the Kingdom, as Dutch customers write them.
    "bonaire": "BQ",
    "sint eustatius": "BQ",
    "saba": "BQ",
    "sint maarten": "SX",
    "st. maarten": "SX",
    # Kosovo: a code ISO 3166-1 leaves to its users, and its users agree on it (the EU,
    # libphonenumber's region XK, the shops' and CRMs' country lists); pycountry does not
    # hold it, nor so its name in any language. "Kosovo*" is the EU's own spelling.
    "xk": "XK",
    "xkx": "XK",
    "kosovo": "XK",
    "kosovo*": "XK",
    "kosova": "XK",
    "kosove": "XK",
    "kosowo": "XK",
    "republic of kosovo": "XK",
    "republiek kosovo": "XK",
    "republik kosovo": "XK",
    "republika e kosoves": "XK",
}

#: The languages of the names a shop's customers type besides English: the Netherlands'
#: and its neighbours', and those of the EU's larger markets. Their names come from the
#: ISO 3166 translations pycountry ships (iso-codes), not a list kept by hand.
_NAME_LANGUAGES = ("nl", "de", "fr", "es", "it", "pt", "pl", "da", "sv", "nb_NO", "fi", "cs")


def _folded(name: str) -> str:
    """A name as compared: NFC, lower-case, and without accents ("Espana" is "España")."""
    decomposed = unicodedata.normalize("NFD", name.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def _translated_names() -> dict[str, str]:
    """Folded name in any of :data:`_NAME_LANGUAGES` -> alpha-2; a name two countries share
    in different languages is left out (it says neither for sure)."""
    found: dict[str, set[str]] = {}
    for language in _NAME_LANGUAGES:
        try:
            catalog = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[language])
        except OSError:
            continue  # a pycountry without that language: the others still count
        for country in pycountry.countries:
            for name in (country.name, getattr(country, "common_name", None)):
                if name:
                    found.setdefault(_folded(catalog.gettext(name)), set()).add(country.alpha_2)
    return {name: next(iter(codes)) for name, codes in found.items() if len(codes) == 1}


@lru_cache(maxsize=1024)
def _country_code(text: str) -> str | None:
    candidate = unicodedata.normalize("NFC", text.strip())
    if not candidate:
        return None
    name = candidate.lower()
    if name in _COUNTRY_NAMES:
        return _COUNTRY_NAMES[name]
    if len(candidate) == 2:
        found = pycountry.countries.get(alpha_2=candidate.upper())
        return str(found.alpha_2) if found else None
    if len(candidate) == 3:
        found = pycountry.countries.get(alpha_3=candidate.upper())
        if found:
            return str(found.alpha_2)
    try:
        return str(pycountry.countries.lookup(name.removeprefix("the ")).alpha_2)
    except LookupError:
        pass
    folded = _folded(name)
    return _COUNTRY_NAMES.get(folded) or _translated_names().get(folded)


def _country(value: Any) -> Any:
    # Invisible marks dropped as for a phone (see _plain), blanks collapsed: "NL" pasted
    # with a zero-width space or a direction mark was no country, and the person's phone
    # and postcode were then read in the shop's own country.
    return _country_code(" ".join(_plain(value).split())) if isinstance(value, str) else None


#: Dates as people and exports write them besides ISO: day first (Dutch and Belgian with
#: "-" or "/", German with dots), or year first with slashes. Never month first: "01/02"
#: is the first of February here, and an American date is not guessed at.
_DATE_FORMATS = ("%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d")


def _date(value: Any) -> Any:
    """ISO 8601 date (``YYYY-MM-DD``) from a date, datetime or ISO-like string."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and value.strip():
        found = _date_of(value.strip())
        if found is None and not (value.isascii() and value.isprintable()):
            # Invisible marks dropped as for a phone (see _plain): a date of birth pasted
            # with a zero-width space or a direction mark was no date, and not sent. Read
            # as typed first: Python takes such a mark for the one character between date
            # and time, and that reading stays.
            found = _date_of(_plain(value).strip())
        return found
    return None


def _date_of(text: str) -> str | None:
    """The date ``text`` (stripped) writes, by ISO 8601 or one of :data:`_DATE_FORMATS`."""
    text = text.replace("Z", "+00:00")
    for parse in (dt.datetime.fromisoformat, dt.date.fromisoformat):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return parsed.date().isoformat() if isinstance(parsed, dt.datetime) else parsed.isoformat()
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _date_text(text: str) -> Any:
    """:func:`_date` for text: an ISO timestamp or date as shops write them (WooCommerce's
    ``2019-01-01T09:00:00``) is read at once; anything else as :func:`_date` reads it."""
    try:
        # "Z" spelled out as _date does: Python takes any character between date and time,
        # so "2019-01-01Z09:00" would otherwise be a date here and none there.
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _date(text)
    # Parsed as it stands it is parsed the same stripped (_date's first try), date and all.
    return parsed.date().isoformat()


def _bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "ja", "on", "subscribed", "y"}:
            return True
        if text in {"0", "false", "no", "nee", "off", "unsubscribed", "n", ""}:
            return False
    return None


def _string(value: Any) -> Any:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


#: Transforms by name; those in :data:`REGIONAL` as they are where no country is known
#: (``phone`` has none: it is built per mapping, because it needs a default region).
TRANSFORMS: dict[str, Transform] = {
    "trim": _trim,
    "lower": _lower,
    "upper": _upper,
    "name": _name,
    "postcode": _postcode,
    "country": _country,
    "date": _date,
    "bool": _bool,
    "string": _string,
}


# The three below are _collapsed written out: they run for most fields of every record, and
# the extra call was a tenth of a record's mapping.


def _trimmed(text: str) -> Any:
    if not text.isascii():
        text = text.translate(INVISIBLE)
    return " ".join(text.split()) or None


def _trimmed_lower(text: str) -> Any:
    if not text.isascii():
        text = text.translate(INVISIBLE)
    trimmed = " ".join(text.split())
    return trimmed.lower() if trimmed else None


def _trimmed_upper(text: str) -> Any:
    if not text.isascii():
        text = text.translate(INVISIBLE)
    trimmed = " ".join(text.split())
    return trimmed.upper() if trimmed else None


#: Transforms that read a value by the conventions of a country, built per region by
#: :func:`make_transform`: a phone number without its country code, a Dutch postcode
#: ("1234 AB"), a Belgian surname's particle ("De Smet").
REGIONAL = frozenset({"phone", "postcode", "name"})

#: Chains of transforms as one function of a text value, for the chains mappings use most: the
#: same result as running the chain, without a call per step (``inbound`` runs them for every
#: field of every record). ``name`` and ``postcode`` collapse spaces themselves, so trimming
#: first changes nothing. Known by the transforms themselves, not their names: a regional
#: one's name says nothing of the country it was built for.
_TEXT_CHAINS: dict[tuple[Transform, ...], Callable[[str], Any]] = {
    (_trim,): _trimmed,
    (_trim, _lower): _trimmed_lower,
    (_trim, _upper): _trimmed_upper,
    (_trim, _name): _name,
    (_trim, _belgian_name): _belgian_name,
    (_trim, _postcode): _trimmed_upper,
    (_trim, _dutch_postcode): _dutch_postcode_text,
    (_date,): _date_text,
}


def text_chain(transforms: tuple[Transform, ...]) -> Callable[[str], Any]:
    """One function giving what ``transforms`` give a text value, run in turn until one
    gives ``None``."""
    fused = _TEXT_CHAINS.get(transforms)
    if fused is not None:
        return fused
    if len(transforms) == 1:
        return transforms[0]  # each transform takes any value
    return chain(transforms)


def chain(transforms: tuple[Transform, ...]) -> Transform:
    """``transforms`` run in turn, stopping at the first ``None`` (see :func:`run_chain`)."""
    return partial(run_chain, transforms)


def run_chain(transforms: Iterable[Transform], value: Any) -> Any:
    """``value`` through ``transforms`` in turn, stopping at the first ``None``."""
    for transform in transforms:
        if value is None:
            return None
        value = transform(value)
    return value


def make_transform(name: str, region: str) -> Transform | None:
    """The transform called ``name`` as it reads a value of ``region`` (see :data:`REGIONAL`),
    or ``None`` if there is no such transform."""
    if name == "phone":
        return _phone_for(region)
    if name == "postcode" and region == "NL":
        return _dutch_postcode
    if name == "name" and region == "BE":
        return _belgian_name
    return TRANSFORMS.get(name)


def forget_phones() -> None:
    """Drop the phone numbers the full parser read so far (kept, as typed and in E.164, to
    read such a number once per process): an erasure must leave none of the person's in a
    daemon's memory."""
    _e164_by_parser.cache_clear()
