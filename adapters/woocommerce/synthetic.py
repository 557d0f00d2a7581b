"""Deterministic synthetic WooCommerce customers for the sandbox and the benchmarks.

A benchmark seeds a million customers; materialising a million dicts would cost gigabytes and
seconds. :class:`SyntheticBlock` instead owns a contiguous id range and builds customer ``i`` on
demand from ``(seed, i)``. Only what tests or syncs change is kept: overrides (a full record
that replaced the generated one) and deletions (a sorted list, so positional lookups stay
logarithmic). Every listing therefore costs O(page size + log deletions).

The data is fictional: names come from short Dutch lists, addresses from made-up streets,
e-mails under ``example.com`` (reserved by RFC 2606) and IP addresses from TEST-NET-2.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from datetime import UTC, date, datetime
from typing import Any

from adapters.woocommerce.shapes import customer_shape

__all__ = ["SyntheticBlock", "synthetic_customer"]

_FIRST = (
    "Anna",
    "Bram",
    "Daan",
    "Emma",
    "Fleur",
    "Sem",
    "Julia",
    "Lucas",
    "Noor",
    "Finn",
    "Sophie",
    "Levi",
    "Tess",
    "Milan",
    "Sara",
    "Jesse",
    "Lotte",
    "Thijs",
    "Eva",
    "Ruben",
)
_LAST = (
    "de Vries",
    "Jansen",
    "van Dijk",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Leeuwen",
    "Dekker",
)
_STREETS = (
    "Kerkstraat",
    "Dorpsstraat",
    "Molenweg",
    "Stationsweg",
    "Schoolstraat",
    "Julianastraat",
    "Beatrixlaan",
    "Wilhelminastraat",
    "Eikenlaan",
    "Lindelaan",
)
_CITIES = (
    "Amsterdam",
    "Rotterdam",
    "Utrecht",
    "Den Haag",
    "Eindhoven",
    "Groningen",
    "Tilburg",
    "Almere",
    "Breda",
    "Nijmegen",
)
_NOTES = ("Graag bellen voor levering", "Pakket bij de buren", "Allergisch voor noten", "")

#: Customers of the block were registered one every 7 minutes from this moment (UTC).
_EPOCH = datetime(2019, 1, 1, 9, 0, tzinfo=UTC)

_EMAIL = re.compile(r"\.(\d+)@example\.com\Z")


def _slug(text: str) -> str:
    return text.lower().replace(" ", "")


# What does not depend on the index, worked out once: a benchmark lists a million of these.
_SLUGS = {name: _slug(name) for name in (*_FIRST, *_LAST)}
_LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"
_EPOCH_DAY = _EPOCH.date().toordinal()
_EPOCH_MINUTE = _EPOCH.hour * 60 + _EPOCH.minute
_BORN_DAY = date(1950, 1, 1).toordinal()


class _Draws:
    """The random choices for one customer, read off one keyed hash of ``(seed, index)``.

    A ``random.Random`` seeded per customer cost ~9 us (its seeding hashes the seed and fills
    the Mersenne Twister's state) of the ~32 us a customer took to build; a benchmark lists a
    million of them, on the machine the connector is measured on. One BLAKE2b digest gives 256
    bits, more than the ~110 a customer draws; each draw takes its share off the number (a
    mixed-radix reading), so draws are uniform and fixed by ``(seed, index)`` alone.
    """

    __slots__ = ("_rest",)

    def __init__(self, seed: int, index: int) -> None:
        digest = hashlib.blake2b(b"%d:%d" % (seed, index), digest_size=32).digest()
        self._rest = int.from_bytes(digest, "big")

    def between(self, low: int, high: int) -> int:
        """A number in ``low .. high - 1``."""
        self._rest, offset = divmod(self._rest, high - low)
        return low + offset

    def pick(self, options: tuple[str, ...] | str) -> str:
        """One of ``options``."""
        return options[self.between(0, len(options))]


def synthetic_customer(customer_id: int, index: int, seed: int) -> dict[str, Any]:
    """Build the customer at ``index`` (1-based) of a block, in the full wc/v3 shape.

    Args:
        customer_id: the WordPress user id it is served under.
        index: its position in the block; with ``seed`` it fixes every value.
        seed: the block's seed, so two benchmarks with the same seed see the same shop.
    """
    # The draws are made in a fixed order; changing it (or the seed text) changes the shop.
    draw = _Draws(seed, index)
    first = draw.pick(_FIRST)
    last = draw.pick(_LAST)
    first_slug, last_slug = _SLUGS[first], _SLUGS[last]
    email = f"{first_slug}.{last_slug}.{index}@example.com"
    phone = f"06 {draw.between(10_000_000, 100_000_000)}"
    address_1 = f"{draw.pick(_STREETS)} {draw.between(1, 200)}"
    city = draw.pick(_CITIES)
    postcode = f"{draw.between(1000, 10000)} {draw.pick(_LETTERS)}{draw.pick(_LETTERS)}"
    place = {
        "first_name": first,
        "last_name": last,
        "address_1": address_1,
        "city": city,
        "postcode": postcode,
        "country": "NL",
        "phone": phone,
    }
    # _EPOCH + 7 * index minutes, as date and time text without a datetime per customer.
    day, minute = divmod(_EPOCH_MINUTE + 7 * index, 1440)
    hour, minute = divmod(minute, 60)
    created = f"{date.fromordinal(_EPOCH_DAY + day).isoformat()}T{hour:02d}:{minute:02d}:00"
    born = date.fromordinal(_BORN_DAY + draw.between(0, 365 * 55)).isoformat()
    # Fields a mapping must never let through: date of birth, IP address (and the note below).
    meta = [
        {"id": index * 10 + 1, "key": "date_of_birth", "value": born},
        {"id": index * 10 + 2, "key": "ip_address", "value": f"198.51.100.{index % 254 + 1}"},
        # A newsletter opt-in (as a checkout plugin stores it): every other customer has one.
        {"id": index * 10 + 3, "key": "marketing_opt_in", "value": "yes" if index % 2 else "no"},
    ]
    customer = customer_shape(
        customer_id=customer_id,
        email=email,
        first_name=first,
        last_name=last,
        username=f"{first_slug}.{last_slug}{index}",
        billing={**place, "email": email},
        shipping=place,
        meta_data=meta,
        created=created,
        modified=created,
        is_paying_customer=draw.between(0, 10) < 6,
    )
    # Not in core's customer schema, but checkout-field plugins expose one; a mapping must drop it.
    customer["customer_note"] = draw.pick(_NOTES)
    return customer


class SyntheticBlock:
    """A contiguous range of generated customers: ids ``base + 1 .. base + n``.

    Args:
        base: the id just before the block.
        n: how many customers it holds.
        seed: fixes every generated value.
    """

    def __init__(self, base: int, n: int, seed: int) -> None:
        self.base = base
        self.n = n
        self.seed = seed
        self.overrides: dict[int, dict[str, Any]] = {}
        self._deleted: list[int] = []  # sorted, so rank/select stay logarithmic

    @property
    def last_id(self) -> int:
        """The highest id the block owns (live or not)."""
        return self.base + self.n

    def owns(self, customer_id: int) -> bool:
        """Whether ``customer_id`` falls in the block's range."""
        return self.base < customer_id <= self.last_id

    def is_live(self, customer_id: int) -> bool:
        """Whether the id is in range and not deleted."""
        if not self.owns(customer_id):
            return False
        at = bisect.bisect_left(self._deleted, customer_id)
        return not (at < len(self._deleted) and self._deleted[at] == customer_id)

    def live_count(self) -> int:
        """Customers still present."""
        return self.n - len(self._deleted)

    def get(self, customer_id: int) -> dict[str, Any] | None:
        """The customer under ``customer_id`` (override or generated), or ``None``."""
        if not self.is_live(customer_id):
            return None
        override = self.overrides.get(customer_id)
        if override is not None:
            return override
        return synthetic_customer(customer_id, customer_id - self.base, self.seed)

    def put(self, customer: dict[str, Any]) -> None:
        """Keep a changed customer in place of the generated one."""
        self.overrides[int(customer["id"])] = customer

    def delete(self, customer_id: int) -> None:
        """Remove a customer for good."""
        if self.is_live(customer_id):
            bisect.insort(self._deleted, customer_id)
            self.overrides.pop(customer_id, None)

    def id_at(self, position: int) -> int:
        """The id of the live customer at 0-based ``position`` in id order.

        A fixed-point search: the answer is ``base + position + 1 + d`` where ``d`` is the
        number of deleted ids at or below it; iterating from ``d = 0`` converges in at most
        ``len(deleted)`` steps, usually one.
        """
        skipped = 0
        while True:
            candidate = self.base + position + 1 + skipped
            now_skipped = bisect.bisect_right(self._deleted, candidate)
            if now_skipped == skipped:
                return candidate
            skipped = now_skipped

    def id_for_email(self, email: str) -> int | None:
        """The id of the generated customer with ``email``, if it still has that e-mail.

        Generated e-mails end in ``.<index>@example.com``, so the index is read back from
        the address instead of scanning the block.
        """
        match = _EMAIL.search(email)
        if match is None:
            return None
        customer_id = self.base + int(match.group(1))
        customer = self.get(customer_id)
        if customer is None or str(customer["email"]).lower() != email.lower():
            return None
        return customer_id
