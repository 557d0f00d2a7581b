"""Mappings: transforms, the allow-list, the withheld count."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.demo import REPO_MAPPINGS
from connector.errors import ConfigError
from connector.mapping import SystemMapping, _get, load_mapping
from connector.transforms import make_transform
from tests.strategies import JSON, JSON_SCALARS, every_key_takes_any_value

WOO = load_mapping(REPO_MAPPINGS / "woocommerce.toml")
HUBSPOT = load_mapping(REPO_MAPPINGS / "hubspot.toml")

RAW = {
    "id": 42,
    "email": "  Jan.Jansen@Example.NL ",
    "first_name": "JAN",
    "last_name": "van der Berg",
    "date_created": "2024-03-01T10:00:00",
    "billing": {"phone": "06 12345678", "country": "Nederland", "city": " Utrecht "},
    "meta_data": [
        {"id": 1, "key": "date_of_birth", "value": "1980-01-01"},
        {"id": 2, "key": "ip_address", "value": "192.0.2.7"},
        {"id": 3, "key": "marketing_opt_in", "value": "yes"},
    ],
    "customer_note": "call after 5",
}


def test_inbound_normalises_values() -> None:
    """E-mail lower-cased, names fixed, phone to E.164, country to ISO code, dates ISO."""
    person = WOO.inbound(RAW)
    assert person["email"] == "jan.jansen@example.nl"
    assert person["first_name"] == "Jan"
    assert person["last_name"] == "van der Berg"
    assert person["phone"] == "+31612345678"
    assert person["country"] == "NL"
    assert person["city"] == "Utrecht"
    assert person["customer_since"] == "2024-03-01"
    assert person["marketing_consent"] is True


def test_unmapped_source_fields_are_counted_by_name() -> None:
    """Fields no mapping names are dropped and counted, values never kept."""
    withheld: Counter[str] = Counter()
    WOO.inbound(RAW, withheld)
    assert withheld == Counter(
        {"meta_data.date_of_birth": 1, "meta_data.ip_address": 1, "customer_note": 1}
    )


def test_a_list_of_values_or_of_objects_is_counted_as_one_withheld_field() -> None:
    """Shopify's tags, a list of addresses: dropped like any unmapped field, and counted
    (only WooCommerce-style meta lists counted, by key); an empty list is no value."""
    withheld: Counter[str] = Counter()
    record = {
        **RAW,
        "tags": ["vip", "newsletter"],
        "addresses": [{"city": "Utrecht"}],
        "empty": [],
        "blanks": ["", None],
    }
    WOO.inbound(record, withheld)
    assert withheld == Counter(
        {
            "meta_data.date_of_birth": 1,
            "meta_data.ip_address": 1,
            "customer_note": 1,
            "tags": 1,
            "addresses": 1,
        }
    )


def test_outbound_is_an_allow_list() -> None:
    """Only fields the destination mapping names leave; others never appear."""
    person = WOO.inbound(RAW)
    payload = HUBSPOT.outbound(person)
    assert set(payload) <= {"email", "firstname", "lastname", "phone", "company", "city", "country"}
    assert "customer_since" not in payload and "date_of_birth" not in str(payload)
    assert payload["phone"] == "+31612345678"


def test_hubspot_inbound_reads_under_properties() -> None:
    """HubSpot records keep fields under `properties`; the mapping reads them there."""
    person = HUBSPOT.inbound({"id": "7", "properties": {"email": "A@B.NL", "firstname": "a"}})
    assert person == {"email": "a@b.nl", "first_name": "A"}
    assert HUBSPOT.record_id({"id": "7"}) == "7"


def test_source_fields_are_the_top_level_fields_read_in_and_the_id(tmp_path: Path) -> None:
    """What a source is asked for: the roots of the inbound paths and of the id; fields sent
    out only are not read from it; a record root stands for the fields under it."""
    assert WOO.source_fields() == {
        "id",
        "email",
        "first_name",
        "last_name",
        "billing",
        "date_created",
        "meta_data",
    }
    assert HUBSPOT.source_fields() == {"id", "properties"}
    path = tmp_path / "m.toml"
    path.write_text(
        'id_path = "ref.no"\n'
        '[fields.email]\npath = "contact.email"\npurpose = "x"\n'
        '[fields.city]\npath = "city"\npurpose = "x"\ndirection = "out"\n'
    )
    assert load_mapping(path).source_fields() == {"ref", "contact"}


def test_source_paths_are_the_inbound_paths_whole_each_with_its_key(tmp_path: Path) -> None:
    """What a source asked field by field (Shopify's GraphQL) is asked for: every path read
    in, nested ones whole, and the id, each with the mapping key that names it."""
    path = tmp_path / "m.toml"
    path.write_text(
        'id_path = "ref.no"\n'
        '[fields.email]\npath = "contact.email"\npurpose = "x"\n'
        '[fields.city]\npath = "city"\npurpose = "x"\ndirection = "out"\n'
        '[fields.state]\npath = "address.province"\npurpose = "x"\n'
    )
    assert load_mapping(path).source_paths() == {
        "ref.no": "id_path",
        "contact.email": "fields.email.path",
        "address.province": "fields.state.path",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("+32 470 12 34 56", "+32470123456"), ("0612345678", "+31612345678"), ("12", None)],
)
def test_phone_transform(value: str, expected: str | None) -> None:
    """Phones become E.164 via libphonenumber; unusable ones become nothing, not errors."""
    transform = make_transform("phone", "NL")
    assert transform is not None
    assert transform(value) == expected


@pytest.mark.parametrize(
    ("country", "phone", "expected"),
    [
        ("BE", "0470 12 34 56", "+32470123456"),  # read as Dutch: +31 470 12 34 56
        ("België", "0470 12 34 56", "+32470123456"),  # the country as a name works too
        ("DE", "0151 23456789", "+4915123456789"),
        ("NL", "06 12345678", "+31612345678"),
        ("BE", "+31 6 12345678", "+31612345678"),  # a country code is kept, wherever they live
        ("", "06 12345678", "+31612345678"),  # no country: the mapping's default_region
        ("Atlantis", "06 12345678", "+31612345678"),
        ("BE", "12", None),  # unusable in their country too: no phone at all
    ],
)
def test_a_phone_without_a_country_code_is_read_in_the_persons_own_country(
    country: str, phone: str, expected: str | None
) -> None:
    """A Belgian or German customer of a Dutch shop who leaves out the country code means
    their own country's number, not a Dutch one of the same digits."""
    person = WOO.inbound({**RAW, "billing": {"phone": phone, "country": country}})
    assert person.get("phone") == expected


def test_mapping_with_unknown_transform_refused(tmp_path: Path) -> None:
    """An unknown transform names the file and key."""
    path = tmp_path / "m.toml"
    path.write_text('[fields.email]\npath = "email"\npurpose = "x"\ntransform = ["shout"]\n')
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert info.value.key == "fields.email.transform"


def test_every_problem_of_a_mapping_file_is_told_at_once_naming_each_key(
    tmp_path: Path,
) -> None:
    """A mapping with several mistakes was told one at a time: fixed, the next appeared.
    Each is told now, the first as the error and the others as its ``also``, each naming the
    mapping file and its key; two in one field as well as in two."""
    path = tmp_path / "m.toml"
    path.write_text(
        'default_region = "XX"\nrequires_consnt = "marketing"\n'
        '[fields.email]\npath = "email"\npurpose = "x"\n'
        '[fields.phone]\npath = "phone"\ntransform = ["shout"]\n'
        '[fields.shoe_size]\npath = "shoe"\npurpose = "y"\n'
        '[fields.city]\npath = "email"\npurpose = "z"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    every = [info.value, *info.value.also]
    assert [error.key for error in every] == [
        "requires_consnt",
        "default_region",
        "fields.phone.purpose",
        "fields.phone.transform",
        "fields.shoe_size",
        "fields.city.path",
    ]
    assert all(error.file == str(path) for error in every)
    assert all(not error.also for error in every[1:])


def test_a_mapping_whose_only_problem_is_one_field_s_still_loads_when_fixed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.toml"
    text = '[fields.email]\npath = "email"\npurpose = "x"\ntransform = ["trim", "shout"]\n'
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert (info.value.key, info.value.also) == ("fields.email.transform", ())
    path.write_text(text.replace(', "shout"', ""))
    assert load_mapping(path).fields["email"].transform_names == ("trim",)


def test_two_fields_written_to_one_path_are_refused(tmp_path: Path) -> None:
    """Both written to "address": every write sent line 2 there and lost line 1 silently.
    Read only ("in"), two fields may share a source path."""
    email = '[fields.email]\npath = "email"\npurpose = "x"\n'
    line1 = '[fields.address_line1]\npath = "address"\npurpose = "x"\n'
    line2 = '[fields.address_line2]\npath = "address"\npurpose = "x"\n'
    path = tmp_path / "m.toml"
    path.write_text(email + line1 + line2)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert info.value.key == "fields.address_line2.path"
    assert "fields.address_line1" in info.value.problem
    path.write_text(email + line1 + line2 + 'direction = "in"\n')
    assert load_mapping(path).fields["address_line2"].path == "address"


def test_outbound_paths_where_one_is_inside_the_other_are_refused(tmp_path: Path) -> None:
    """The phone written to "billing" and the city to "billing.city": a write's body holds
    "billing" as the phone text or as the object holding the city, so one of the two was
    lost from every write. Read only ("in"), the one may lie inside the other."""
    email = '[fields.email]\npath = "email"\npurpose = "x"\n'
    phone = '[fields.phone]\npath = "billing"\npurpose = "x"\n'
    city = '[fields.city]\npath = "billing.city"\npurpose = "x"\n'
    path = tmp_path / "m.toml"
    # The e-mail goes with every write, whatever its direction: it counts too.
    email_in = email.replace('"email"', '"contact"') + 'direction = "in"\n'
    for text, key, other in [
        (email + phone + city, "fields.city.path", "fields.phone"),
        (email + city + phone, "fields.phone.path", "fields.city"),
        (email_in + city.replace("billing", "contact"), "fields.city.path", "fields.email"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_mapping(path)
        assert (info.value.file, info.value.key) == (str(path), key)
        assert other in info.value.problem
    path.write_text(email + phone + city + 'direction = "in"\n')
    assert load_mapping(path).fields["city"].path == "billing.city"


@pytest.mark.parametrize(
    ("marker", "key"),
    [
        ('withdrawn = { email_address = "unsubscribed" }', "withdrawn.email_address"),
        ('withdrawn = { merge_fields = "x" }', "withdrawn.merge_fields"),
        ('consent_renewed = { "merge_fields.FNAME" = "x" }', "consent_renewed.merge_fields.FNAME"),
    ],
)
def test_a_consent_marker_on_a_written_path_is_refused(
    tmp_path: Path, marker: str, key: str
) -> None:
    """A withdrawal sends the e-mail with the ``withdrawn`` marker, a renewal the fields with
    the ``consent_renewed`` one: a marker on a field's place replaced the address (or the
    name) in that write with the marker's value."""
    text = (REPO_MAPPINGS / "mailchimp.toml").read_text()
    kept = "" if marker.startswith("withdrawn") else 'withdrawn = { status = "unsubscribed" }\n'
    text = text.replace('consent_renewed = { status = "pending" }', "")
    text = text.replace('withdrawn = { status = "unsubscribed" }', kept + marker)
    path = tmp_path / "mailchimp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert "fields." in info.value.problem


def test_personal_data_the_shipped_mappings_do_not_map_is_counted_as_withheld() -> None:
    """``ignore`` is for technical fields only: whether a customer ever paid (WooCommerce),
    a member's status, tags, rating, stats, language, VIP mark and sign-up times
    (Mailchimp), a person's organisation, labels and photo (Pipedrive) are personal data,
    which a report must show among what was withheld, not hide."""
    cases = {
        "woocommerce": {"is_paying_customer": True},
        "mailchimp": {
            "status": "subscribed",
            "tags": [{"id": 1, "name": "vip"}],
            "member_rating": 4,
            "stats": {"avg_open_rate": 0.5},
            "language": "nl",
            "vip": True,
            "timestamp_opt": "2024-01-01T10:00:00+00:00",
            "timestamp_signup": "2024-01-01T09:00:00+00:00",
        },
        "pipedrive": {"org_id": 12, "label_ids": [5], "picture_id": 77},
    }
    for system, fields in cases.items():
        mapping = load_mapping(REPO_MAPPINGS / f"{system}.toml")
        withheld: Counter[str] = Counter()
        record = {"id": 7, mapping.fields["email"].path: "a@example.com", **fields}
        mapping.inbound(record, withheld)
        assert {path.split(".")[0] for path in withheld} == set(fields), system


def test_mapping_without_email_refused(tmp_path: Path) -> None:
    """Every mapping must map the e-mail, the key subjects are known by."""
    path = tmp_path / "m.toml"
    path.write_text('[fields.first_name]\npath = "fn"\npurpose = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert info.value.key == "fields.email"


_GOOD_EMAIL = '[fields.email]\npath = "email"\npurpose = "x"\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[fields.email]\npath = "email"\npurpose = "x"\ntransform = 5\n',
            "fields.email.transform",
        ),
        (
            '[fields.email]\npath = "email"\npurpose = "x"\ntransform = {a = 1}\n',
            "fields.email.transform",
        ),
        ('[fields.email]\npath = 5\npurpose = "x"\n', "fields.email.path"),
        (
            '[fields.email]\npath = "email"\npurpose = "x"\ndirection = "sideways"\n',
            "fields.email.direction",
        ),
        ('requires_consent = ["marketing"]\n' + _GOOD_EMAIL, "requires_consent"),
        ('default_region = "XX"\n' + _GOOD_EMAIL, "default_region"),
        ("default_region = 31\n" + _GOOD_EMAIL, "default_region"),
        ("record_root = 5\n" + _GOOD_EMAIL, "record_root"),
        ("id_path = []\n" + _GOOD_EMAIL, "id_path"),
        ('id_path = ""\n' + _GOOD_EMAIL, "id_path"),
        ("ignore = 5\n" + _GOOD_EMAIL, "ignore"),
        ('requires_consent = "marketing"\nwithdrawn = 5\n' + _GOOD_EMAIL, "withdrawn"),
        (
            'requires_consent = "marketing"\nconsent_renewed = { status = "pending" }\n'
            + _GOOD_EMAIL,
            "consent_renewed",
        ),
        ("fields = 5\n", "fields"),
    ],
)
def test_mapping_key_of_the_wrong_type_names_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """A key of the wrong type (or an unknown region) is a ConfigError on that key, never a
    TypeError or a silently accepted value."""
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert info.value.file == str(path) and info.value.key == key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            _GOOD_EMAIL + '[fields.phone]\npath = "billing..phone"\npurpose = "x"\n',
            "fields.phone.path",
        ),
        (_GOOD_EMAIL.replace('"email"', '"email."'), "fields.email.path"),
        (_GOOD_EMAIL.replace('"email"', '".email"'), "fields.email.path"),
        ('id_path = "data..id"\n' + _GOOD_EMAIL, "id_path"),
    ],
    ids=["inner", "trailing", "leading", "id_path"],
)
def test_a_path_with_an_empty_segment_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """ "billing..phone", "email." or ".email" name no place in any record: read, the field is
    never found (an e-mail so: every customer "without a usable e-mail"); written, it goes
    under an empty key. Refused on the key, naming the mapping file."""
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert info.value.file == str(path) and info.value.key == key
    assert "empty key between its dots" in info.value.problem


def _refused_marker(tmp_path: Path, marker: str, key: str, problem: str) -> Path:
    """Mailchimp's mapping with its marker replaced by ``marker``: refused at load on
    ``key`` with ``problem``, naming the file; returns the file."""
    text = (REPO_MAPPINGS / "mailchimp.toml").read_text()
    old = (
        'consent_renewed = { status = "pending" }'
        if marker.startswith("consent_renewed")
        else 'withdrawn = { status = "unsubscribed" }'
    )
    assert old in text
    path = tmp_path / "mailchimp.toml"
    path.write_text(text.replace(old, marker))
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert problem in info.value.problem
    return path


@pytest.mark.parametrize(
    ("marker", "key", "problem"),
    [
        ('withdrawn = { "status..x" = "unsubscribed" }', "withdrawn.status..x", "empty key"),
        ('withdrawn = { "status." = "unsubscribed" }', "withdrawn.status.", "empty key"),
        ('withdrawn = { "" = "unsubscribed" }', "withdrawn.", "names no field"),
        ('consent_renewed = { ".status" = "pending" }', "consent_renewed..status", "empty key"),
    ],
)
def test_a_consent_marker_with_an_empty_key_in_its_path_is_refused(
    tmp_path: Path, marker: str, key: str, problem: str
) -> None:
    """A marker is written as a field is, its dots nested into the body: one with an empty
    key went under that empty key, so a withdrawal set no status of the system's and the
    person stayed subscribed. Refused on the key, naming the mapping file."""
    _refused_marker(tmp_path, marker, key, problem)


_TIME = "date or time"
_FINITE = "finite number"


@pytest.mark.parametrize(
    ("marker", "key", "problem"),
    [
        ('withdrawn = { status = "unsubscribed", since = 2026-01-15 }', "withdrawn.since", _TIME),
        ("withdrawn = { status = 2026-01-15T10:00:00Z }", "withdrawn.status", _TIME),
        ('consent_renewed = { status = "pending", at = 10:00:00 }', "consent_renewed.at", _TIME),
        ('withdrawn = { status = "x", notes = { on = [2026-01-15] } }', "withdrawn.notes", _TIME),
        ('withdrawn = { status = "x", score = nan }', "withdrawn.score", _FINITE),
        ('withdrawn = { status = "x", scores = [1.0, -inf] }', "withdrawn.scores", _FINITE),
    ],
)
def test_a_consent_marker_no_write_can_carry_is_refused(
    tmp_path: Path, marker: str, key: str, problem: str
) -> None:
    """A marker's value is queued as JSON, which has no dates or times: one written as TOML
    writes them passed `check`, and the sync queuing the first withdrawal ended as an
    internal error (TypeError); ``inf`` and ``nan`` went as null. Refused on the key,
    naming the mapping file; a date in quotes, as text, loads."""
    path = _refused_marker(tmp_path, marker, key, problem)
    text = (REPO_MAPPINGS / "mailchimp.toml").read_text()
    quoted = 'withdrawn = { status = "unsubscribed", since = "2026-01-15" }'
    path.write_text(text.replace('withdrawn = { status = "unsubscribed" }', quoted))
    assert load_mapping(path).withdrawn["since"] == "2026-01-15"


def test_mapping_values_are_read_as_written(tmp_path: Path) -> None:
    """A lower-case region is accepted as its code, and one transform may be a plain string."""
    path = tmp_path / "m.toml"
    path.write_text(
        'default_region = "be"\n'
        '[fields.email]\npath = "email"\npurpose = "x"\ntransform = "lower"\n'
        '[fields.phone]\npath = "tel"\npurpose = "y"\ntransform = ["phone"]\n'
    )
    mapping = load_mapping(path)
    assert mapping.fields["email"].transform_names == ("lower",)
    assert mapping.inbound({"email": "A@B.BE", "tel": "0470 12 34 56"}) == {
        "email": "a@b.be",
        "phone": "+32470123456",
    }


@pytest.mark.parametrize("kind", ["directory", "latin-1"])
def test_unreadable_mapping_names_it_and_the_config_key(
    tmp_path: Path, env: dict[str, str], kind: str
) -> None:
    """A mapping path that is a directory, or a mapping not in UTF-8, is a config error naming
    the mapping and which key of which config chose it: a directory is the config's mistake
    (its file and key), a mapping not in UTF-8 the mapping's own."""
    from connector.config import load_config
    from tests.conftest import write_config

    if kind == "directory":
        mapping = tmp_path / "mappings"
        mapping.mkdir()
    else:
        mapping = tmp_path / "crm.toml"
        mapping.write_bytes(("# café\n" + _GOOD_EMAIL).encode("latin-1"))
    config = write_config(tmp_path, crm_mapping=mapping)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    if kind == "directory":
        assert (info.value.file, info.value.key) == (str(config), "systems.crm.mapping")
        assert str(mapping) in info.value.problem
    else:
        assert info.value.file == str(mapping)
        assert "systems.crm.mapping" in info.value.problem and str(config) in info.value.problem


def test_a_mapped_field_holding_an_object_is_not_read_and_a_number_is_read_as_text() -> None:
    """The allow-list names a field, not what is inside it: an object or a list where a
    value belongs (a plugin's whole address record with a date of birth in it) is not read
    and never passed on; a number (a postcode kept as one) is read as its text."""
    billing = {
        "address_1": {"street": "Dorpsstraat 1", "date_of_birth": "1980-01-01"},
        "address_2": ["flat 3", "1980-01-01"],
        "postcode": 1234,
        "city": 3.5,
        "country": "NL",
        "phone": "06 12345678",
    }
    person = WOO.inbound({**RAW, "billing": billing, "first_name": {"given": "Jan"}})
    assert "address_line1" not in person and "address_line2" not in person
    assert "first_name" not in person
    assert (person["postcode"], person["city"], person["phone"]) == ("1234", "3.5", "+31612345678")
    assert "1980-01-01" not in repr(person)


@pytest.mark.parametrize("system", sorted(p.stem for p in REPO_MAPPINGS.glob("*.toml")))
def test_inbound_takes_any_record_a_system_may_send_without_failing(system: str) -> None:
    """A field of another type than usual (a number for a name, a list for an address, a
    meta list of strings) is read as no value or as text, never an exception that would
    stop the whole sync at that record."""
    mapping = load_mapping(REPO_MAPPINGS / f"{system}.toml")
    tops = sorted({f.path.split(".")[0] for f in mapping.fields.values()} | {"properties"})
    seconds = sorted({p for f in mapping.fields.values() for p in f.path.split(".")[1:2]})
    nested = st.dictionaries(
        st.sampled_from(seconds or ["x"]) | st.text(max_size=6), JSON, max_size=5
    )
    meta = st.lists(
        st.fixed_dictionaries(
            {"key": st.sampled_from(seconds or ["x"]) | st.text(max_size=6), "value": JSON}
        )
        | JSON,
        max_size=3,
    )
    records = st.dictionaries(
        st.sampled_from(tops) | st.text(max_size=8), JSON | nested | meta, max_size=8
    )

    @settings(max_examples=100, derandomize=True, deadline=None)
    @given(record=records)
    def reads(record: dict[str, object]) -> None:
        withheld: Counter[str] = Counter()
        person = mapping.inbound(record, withheld)
        assert all(isinstance(value, str | bool) for value in person.values()), person
        # A yes/no only where the field reads one: no name or city is sent as true.
        texts = {n: v for n, v in person.items() if "bool" not in mapping.fields[n].transform_names}
        assert all(isinstance(value, str) for value in texts.values()), person
        assert all(isinstance(path, str) for path in withheld)

    reads()


def _by_each_path(mapping: SystemMapping, record: dict[str, object]) -> dict[str, object]:
    """What reading a record means, field by field: each inbound field read at its whole
    path and converted (for a person of the country read, as ``convert_for`` says)."""
    root: object = record if mapping.record_root is None else record.get(mapping.record_root)
    if not isinstance(root, Mapping):
        root = {}
    fields = {n: f for n, f in mapping.fields.items() if f.inbound}
    values = {n: _get(root, tuple(f.path.split("."))) for n, f in fields.items()}
    country = fields["country"].convert(values["country"]) if "country" in fields else None
    person = {n: mapping.convert_for(n, values[n], country) for n in fields}
    return {n: v for n, v in person.items() if v is not None}


_INTERLEAVED = """
system = "crm"
record_root = "properties"
[fields.email]
path = "contact.email"
transform = ["trim", "lower"]
purpose = "Identify"
[fields.first_name]
path = "name"
transform = ["trim", "name"]
purpose = "Address"
[fields.city]
path = "contact.address.city"
transform = ["trim", "upper"]
purpose = "Post"
[fields.phone]
path = "contact.phone"
transform = ["trim", "phone"]
purpose = "Call"
[fields.company]
path = "company"
purpose = "Business"
[fields.country]
path = "meta.country"
transform = ["country"]
purpose = "Post"
[fields.customer_since]
path = "contact.since"
transform = ["date"]
purpose = "Relationship"
[fields.marketing_consent]
path = "meta.optin"
transform = ["bool", "string"]
purpose = "Consent"
"""


@pytest.mark.parametrize(
    "system", ["interleaved", *sorted(p.stem for p in REPO_MAPPINGS.glob("*.toml"))]
)
def test_inbound_reads_every_field_as_its_path_and_transforms_say(
    system: str, tmp_path: Path
) -> None:
    """``inbound`` reads the fields under one key together and runs a text value's
    transforms as one function: what it gives is what reading each field at its own path
    and running its transforms in turn gives, for any record. The "interleaved" mapping
    has fields under one key apart, a path three keys deep, a field without transforms and
    one with two, a meta list and a record root."""
    if system == "interleaved":
        path = tmp_path / "crm.toml"
        path.write_text(_INTERLEAVED)
        mapping = load_mapping(path)
    else:
        mapping = load_mapping(REPO_MAPPINGS / f"{system}.toml")
    paths = [f.path.split(".") for f in mapping.fields.values()]
    keys = sorted({k for p in paths for k in p} | {"properties", "key", "value"})
    text = st.sampled_from(
        [
            "",
            "  ",
            " Jan  de Vries ",
            "JAN",
            "06 12345678",
            "0470 12 34 56",
            "+31 6 12345678",
            "2024-03-01T10:00:00",
            "2024-03-01T10:00:00Z",
            " 2024-03-01 ",
            "01-03-2024",
            "2019-01-01Z09:00:00",  # Python reads any character between date and time
            "2019-W01Z11",
            "BE",
            "Belgie",
            "nl",
            "yes",
            "nee",
            "A@B.NL ",
        ]
    )
    # Leaves are scalars: the recursion itself nests lists, objects and meta lists under the
    # mapping's keys, and a whole JSON tree at each leaf only made drawing a record slow.
    value = st.recursive(
        text | JSON_SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(keys), inner, max_size=6)
            | st.lists(st.fixed_dictionaries({"key": st.sampled_from(keys), "value": inner}))
        ),
        max_leaves=20,
    )
    records = st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), value, max_size=8)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(record=records)
    def reads(record: dict[str, object]) -> None:
        person = mapping.inbound(record)
        assert person == _by_each_path(mapping, record)
        # In mapping order, as reports and payloads list them.
        assert list(person) == [n for n in mapping.fields if n in person]

    reads()


@pytest.mark.parametrize("system", ["woocommerce", "mailchimp"])
def test_any_value_under_any_key_of_a_mapping_loads_or_is_named_as_a_mistake(
    system: str, tmp_path: Path
) -> None:
    """As for the config: a mapping key given a value of another type is a ConfigError
    naming the file and key, never another exception."""
    path = tmp_path / f"{system}.toml"

    def load(changed: Path) -> None:
        try:
            load_mapping(changed)
        except ConfigError as exc:
            assert exc.file == str(changed)

    text = (REPO_MAPPINGS / f"{system}.toml").read_text()
    every_key_takes_any_value(text, path, load, examples=80)


def _read(billing: dict[str, str], **top: str) -> tuple[dict[str, object], Counter[str]]:
    """``RAW`` with ``billing`` and top-level ``top`` as WooCommerce read: the person and
    the values counted as not readable."""
    unreadable: Counter[str] = Counter()
    person = WOO.inbound({**RAW, **top, "billing": billing}, Counter(), unreadable)
    return dict(person), unreadable


@pytest.mark.parametrize(
    ("billing", "top", "counted"),
    [
        ({"phone": "12", "country": "NL"}, {}, {"phone": 1}),
        ({"phone": "call me", "country": "NL"}, {}, {"phone": 1}),
        ({"phone": "06 12345678", "country": "Atlantis"}, {}, {"country": 1}),
        ({"phone": "", "country": "NL"}, {}, {}),  # no value given: none lost
        ({"phone": " \u200b ", "country": "NL"}, {}, {}),
        ({"phone": "06 12345678"}, {"date_created": "next tuesday"}, {"customer_since": 1}),
        # Read in the person's own country: unreadable there, or there alone, counts.
        ({"phone": "030 1234567890", "country": "DE"}, {}, {}),  # not Dutch, but German
        ({"phone": "0612 3456 789", "country": "BE"}, {}, {"phone": 1}),  # Dutch only
        ({"phone": "12", "country": "BE"}, {}, {"phone": 1}),
    ],
)
def test_a_value_a_field_cannot_read_is_counted_by_field(
    billing: dict[str, str], top: dict[str, str], counted: dict[str, int]
) -> None:
    """A phone number the transform cannot read was dropped without a word, and the
    destinations kept the number they had: such values are counted by field (never kept),
    for the sync report. Blanks are no value, and count as none."""
    person, unreadable = _read(billing, **top)
    assert unreadable == Counter(counted)
    assert not set(counted) & set(person)


@pytest.mark.parametrize(("given", "counted"), [(True, True), (False, False)])
def test_a_yes_or_no_where_text_belongs_is_not_sent(given: bool, counted: bool) -> None:
    """A shop built on PHP writes false for a field it holds nothing in, a plugin may write
    true: either went on as the person's first name, city or postcode (a CRM keeps it as the
    text "false"). Neither is read; true is counted as a value not readable, so the
    destinations keep what they had, and false is no value, as an empty text is."""
    keys = ("company", "address_1", "postcode", "city", "country", "phone")
    record = {**RAW, "first_name": given, "last_name": given}
    record["billing"] = dict.fromkeys(keys, given)
    unreadable: Counter[str] = Counter()
    person = WOO.inbound(record, Counter(), unreadable)
    names = {"first_name", "last_name", "company", "address_line1", "postcode", "city"}
    names |= {"country", "phone"}
    assert not names & set(person)
    assert person["marketing_consent"] is True  # where a yes/no belongs, it is read
    assert unreadable == (Counter(names) if counted else Counter())
    assert person.unread == (names if counted else set())


@pytest.mark.parametrize("country", ["NL", "BE"])
def test_an_object_or_a_list_holding_something_is_a_value_not_read_not_none(
    country: str,
) -> None:
    """A plugin that keeps the phone numbers as a list, or the address as an object, gives
    a value the mapping does not read: taken for none, the field was emptied in every
    system the flow had written it to. It is counted as not readable and marked so, and the
    destinations keep what they had, as for a phone number that is none; read again in a
    Belgian customer's own country, too. An empty one is none, as PHP writes an empty field."""
    billing = {
        "phone": ["06 12345678", "020 1234567"],
        "address_1": {"street": "Dorpsstraat", "number": "1"},
        "city": [],
        "postcode": {},
        "country": country,
    }
    unreadable: Counter[str] = Counter()
    person = WOO.inbound({**RAW, "billing": billing}, Counter(), unreadable)
    assert not {"phone", "address_line1", "city", "postcode"} & set(person)
    assert unreadable == Counter({"phone": 1, "address_line1": 1})
    assert person.unread == {"phone", "address_line1"}


def test_values_read_are_not_counted_and_counting_changes_nothing_read() -> None:
    unreadable: Counter[str] = Counter()
    assert WOO.inbound(RAW, Counter(), unreadable) == WOO.inbound(RAW)
    assert not unreadable


@pytest.mark.parametrize(
    ("country", "typed", "written"),
    [
        ("NL", "1234ab", "1234 AB"),
        ("NL", "1234AB", "1234 AB"),
        ("Nederland", "1234  ab", "1234 AB"),
        ("NL", "0123AB", "0123AB"),  # no Dutch postcode: as before
        ("BE", "1234ab", "1234AB"),  # another country's: as before, collapsed and capitals
        ("DE", "10115", "10115"),
        ("GB", "sw1a 1aa", "SW1A 1AA"),
    ],
)
def test_a_dutch_customer_s_postcode_is_written_as_postnl_writes_it(
    country: str, typed: str, written: str
) -> None:
    """A Dutch customer's "1234ab" went to every system as "1234AB"; it is "1234 AB". A
    customer of another country keeps the postcode as it was sent before."""
    person, _ = _read({"postcode": typed, "country": country})
    assert person["postcode"] == written
    assert WOO.convert_for("postcode", typed, str(person["country"])) == written


@pytest.mark.parametrize(
    ("country", "typed", "written"),
    [
        ("BE", "DE SMET", "De Smet"),
        ("België", "van damme", "Van Damme"),
        ("BE", "VAN DEN BROECK", "Van den Broeck"),
        ("BE", "de Smet", "de Smet"),  # mixed case is as the person wrote it
        ("BE", "Peeters", "Peeters"),
        ("NL", "DE SMET", "de Smet"),  # the Dutch way, as before
        ("DE", "VON DER LEYEN", "von der Leyen"),
        ("FR", "DE GAULLE", "de Gaulle"),
    ],
)
def test_a_belgian_customer_s_surname_keeps_its_particle_capitalised(
    country: str, typed: str, written: str
) -> None:
    """Belgians write a surname's particle capitalised ("De Smet"): a Belgian customer who
    typed "DE SMET" was sent everywhere as the Dutch "de Smet"."""
    person, _ = _read({"country": country}, last_name=typed)
    assert person["last_name"] == written
    assert WOO.convert_for("last_name", typed, str(person["country"])) == written
