"""Finding a subject in a WooCommerce shop: their customer accounts, orders and product reviews.

What an access copy (``find``) and an erasure read alike, so both go by the same rules of whose
an order or a review is (see :mod:`adapters.woocommerce.adapter` for the approach).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import unquote

from adapters.woocommerce._calls import API, ShopCalls, _is_id
from adapters.woocommerce.payloads import ANONYMOUS_REVIEW, valid_email
from connector.adapter import Subject, placed_by_another
from connector.errors import RetryableError
from connector.model import normalise_email
from connector.others import own_addresses, text_without_others
from connector.workers import gather_or_cancel

__all__ = [
    "ORDER_KEYS",
    "REVIEWS",
    "REVIEW_KEYS",
    "REVIEW_RECORD",
    "SubjectLookup",
]

#: What an erasure's reads ask of an order (``_fields``): its id, and what tells whose it is
#: (the account that placed it, the address it is billed to). Not what was bought, its
#: total, its addresses, or the IP address and browser it was placed from.
ORDER_KEYS = ("id", "customer_id", "billing.email")

#: Product reviews: listed by a user who may ``moderate_comments``, changed by one who may
#: ``edit_products`` (``wc_rest_check_product_reviews_permissions`` [src]), as a shop manager
#: and an administrator may; another key's user is refused (``check --online`` says so).
REVIEWS = f"{API}/products/reviews"
#: The review list's statuses an erasure and an access copy read. Its ``all`` is
#: WP_Comment_Query's: held and approved reviews alone. Those marked spam and those in the
#: trash keep the reviewer's name and e-mail (and can be restored), so they are asked for by
#: name. [src: ``WC_REST_Product_Reviews_Controller::get_collection_params`` and WordPress's
#: ``class-wp-comment-query.php``, read for this; reference/vendor-apis.md has nothing on
#: reviews, and none of it was tried against a live shop.] A review of a product in the trash
#: (``wp_trash_post_comments`` marks each ``post-trashed``, whatever its status) is in none of
#: these, and the list's enum has no way to ask for it; ``GET .../reviews/{id}`` shows it, but
#: nothing lists its id, so it is not reached (README, Known limits). A draft or private
#: product's are listed: the controller's query asks nothing of the product's status.
REVIEW_STATUSES = ("all", "spam", "trash")
#: What an erasure asks of each review (``_fields``): its id, the reviewer's e-mail and the
#: link to the account it was written from (whose it is: :func:`_reviewer_account`; WordPress
#: reads ``a.b`` as ``b`` of ``a`` since 5.3, and gives ``_links`` only when asked for). Not
#: the reviewer's name or what they wrote.
REVIEW_KEYS = ("id", "reviewer_email", "_links.reviewer")
#: A ``reviewer`` link's account: ``rest_url('wp/v2/users/' . $review->user_id)``, under
#: ``/wp-json/`` or, without pretty permalinks, in ``?rest_route=``.
REVIEWER_HREF = re.compile(r"/wp/v2/users/(\d+)(?![\d])")
#: The key an access copy and an erasure's reads put a review under, in the shape wc/v3 gives
#: it. Not the record's top level: the core reads a record's ``id`` there as a person's (the
#: identity map's), and a review's id is a comment's, which a customer's may equal.
REVIEW_RECORD = "product_review"


class SubjectLookup(ShopCalls):
    """Reads of the subject's customer accounts, orders (with their notes) and reviews."""

    async def _customer_by_email(
        self, email: str, fields: Mapping[str, str]
    ) -> dict[str, Any] | None:
        if not valid_email(email):
            # WordPress refuses such an address in the filter (400 rest_invalid_param), and
            # no account can hold one: nobody, not a failure (the id may still find them).
            return None
        # role=all: a subscriber or shop manager with this e-mail is the same person.
        params = {"email": email, "role": "all"}
        asked = fields.get("_fields")
        # The address is read back to be compared (below), whatever else the caller asks.
        narrowed = {"_fields": ",".join(sorted({*asked.split(","), "email"}))} if asked else {}
        path = f"{API}/customers"
        if email.startswith("*"):
            # WP_User_Query reads a "*" at the start of the search as a wildcard (a LIKE):
            # "*bob@example.nl" lists jimbob@example.nl too, in any number.
            listed = await self._list_all(path, params, narrowed)
        else:
            response = await self._request("GET", path, params={**params, **narrowed})
            listed = self._list(response, "GET", path)
        # Only the account holding the address itself is the person's: the first hit was
        # taken before, to copy, write or delete, whoever's it was. (MySQL's collation
        # compares without case, and in some "ss" as "ß": two people, as for reviews.)
        wanted = normalise_email(email)
        for customer in listed:
            held = customer.get("email")
            if isinstance(held, str) and normalise_email(held) == wanted:
                return customer
        return None

    async def _customer_by_id(
        self, external_id: str | None, fields: Mapping[str, str]
    ) -> dict[str, Any] | None:
        known = _wp_id(external_id)
        if known is None:
            return None  # not a WordPress id: it cannot address anyone here
        path = f"{API}/customers/{known}"
        response = await self._request("GET", path, params=fields, accept=(404,))
        if response.status_code != 200:
            return None
        body = self._json(response, "GET", path)
        if not (isinstance(body, dict) and _is_id(body.get("id"))):
            # Not a customer, and not a 404: never read as "nobody" (see _list).
            raise RetryableError(self.client.system, "GET", path, 200, "unreadable answer")
        return body

    async def _customers_for(
        self, subject: Subject, fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The subject's customer accounts: the one the identity map's id names first, then
        the one holding the address where that is another; whole, or cut to ``fields``
        (``{"_fields": ...}``). Another subject's (Subject.spare) is neither read nor deleted.

        The id is read beside the address, not only when the address finds nobody: the
        person's shop e-mail may have changed while their former address now finds another
        account (someone who signed up under it since), and the person's own account was
        then neither copied nor erased.
        """
        fields = fields or {}
        by_email = await self._customer_by_email(subject.email, fields)
        found = [] if by_email is None else [by_email]
        if by_email is None or str(by_email["id"]) != _wp_id(subject.external_id):
            own = await self._customer_by_id(subject.external_id, fields)
            found = found if own is None else [own, *found]
        return [c for c in found if str(c["id"]) not in subject.spare]

    async def _orders_anywhere(
        self, params: Mapping[str, Any], fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """``_list_orders``, and the same in the trash: wc/v3's ``status=any`` (its default)
        leaves trashed orders out and lists them only under ``status=trash``. A trashed
        order (the shop owner's bin, WooCommerce's own clean-up of failed and cancelled
        orders) keeps its billing data and can be restored, so access shows it and an
        erasure blanks it like any other."""
        listed = await self._list_all(f"{API}/orders", params, fields)
        return listed + await self._list_all(f"{API}/orders", {**params, "status": "trash"}, fields)

    async def _orders_for(
        self,
        subject: Subject,
        customers: Sequence[Mapping[str, Any]],
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The subject's orders, trashed ones included: those their ``customers`` placed,
        and those billed to their addresses (:func:`_addresses`) that are theirs by
        :func:`~connector.adapter.placed_by_another`, the rule access reads its copy by
        too: guest orders, and their own accounts' (an account the identity map names
        counts, should the shop not have detached its orders when it was deleted). An order
        another account holder billed to the address is that customer's: an erasure that
        blanked it destroyed their name, address and note. Whole, or cut to ``fields``
        (``{"_fields": ...}``, which must keep what this reads: :data:`ORDER_KEYS`)."""
        accounts = [int(customer["id"]) for customer in customers]
        own = {str(account) for account in accounts}
        known = _wp_id(subject.external_id)
        if known and known not in subject.spare:
            own.add(known)
        found: dict[int, dict[str, Any]] = {}
        for account in accounts:
            for order in await self._orders_anywhere({"customer": account}, fields):
                found[order["id"]] = order
        for email in _addresses(subject, customers):
            wanted = normalise_email(email)
            if "@" not in wanted:
                # Without an e-mail there is nothing to match guest orders on; an empty search
                # would list every order of the shop, and blank billing e-mails would "match".
                continue
            # search is a substring match over the address index: keep exact e-mail matches
            # only, so jan@x.nl is never mistaken for an@x.nl, nor strasse@ (another subject)
            # for straße@, which the shop's database may fold to the same.
            for order in await self._orders_anywhere({"search": email}, fields):
                billing = order.get("billing")
                billed_to = billing.get("email", "") if isinstance(billing, Mapping) else ""
                if (
                    isinstance(billed_to, str)
                    and normalise_email(billed_to) == wanted
                    and not placed_by_another(order, own)
                ):
                    found[order["id"]] = order
        return [found[k] for k in sorted(found)]

    async def _reviews_for(
        self,
        subject: Subject,
        customers: Sequence[Mapping[str, Any]],
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The subject's product reviews: those written under one of their addresses
        (:func:`_addresses`) and those written from one of their accounts
        (:func:`_review_accounts`), in every status the list gives (:data:`REVIEW_STATUSES`).

        The shop's ``reviewer_email`` filter compares by its database's collation (without
        case; in some, "ß" as "ss"), so only exact matches are kept, as for guest orders:
        strasse@ and straße@ are two people. Whole, or cut to ``fields`` (``{"_fields":
        ...}``, which must keep ``reviewer_email`` and ``_links.reviewer``)."""
        accounts = _review_accounts(subject, customers)
        addresses = [
            (email, normalise_email(email))
            for email in _addresses(subject, customers)
            # WordPress refuses such an address in the filter (400 rest_invalid_param), as its
            # REST API and its comment form (where the site asks for an e-mail, its default)
            # refuse it for a review: nobody, not a failure.
            if valid_email(email)
        ]
        asked = [
            *(
                {"reviewer_email": email, "status": s}
                for email, _ in addresses
                for s in REVIEW_STATUSES
            ),
            *({"reviewer": account, "status": s} for account in accounts for s in REVIEW_STATUSES),
        ]
        # Asked several at once: one list call per address or account and status, each a
        # round trip, made one after the other was most of an erasure's time at the shop.
        # No more at once than the shop takes, and the first refusal (a revoked key's 401)
        # ends the rest: with a bare gather they all ran, each earning its own 401.
        calls = [partial(self._list_all, REVIEWS, p, fields) for p in asked]
        # gather_or_cancel waits on what it starts: none (no address WordPress takes, no
        # account) is nothing to wait for.
        answers = await gather_or_cancel(calls, limit=self.limits.max_concurrency) if calls else []
        wanted = {normalised for _, normalised in addresses}
        found: dict[int, dict[str, Any]] = {}
        for params, reviews in zip(asked, answers, strict=True):
            for review in reviews:
                if "reviewer" in params:
                    # Anonymised, it names them no more; and WordPress keeps its user id
                    # after the account is deleted (no REST argument clears it), so an
                    # erasure's check would find it again for ever.
                    if review.get("reviewer_email") != ANONYMOUS_REVIEW["reviewer_email"]:
                        found[review["id"]] = review
                    continue
                written = review.get("reviewer_email")
                if (
                    isinstance(written, str)
                    and normalise_email(written) in wanted
                    and not _written_by_another(review, accounts)
                ):
                    found[review["id"]] = review
        return [found[k] for k in sorted(found)]

    async def _notes_of(self, order_id: int) -> list[dict[str, Any]]:
        """``GET /orders/{id}/notes``: every note (wc/v3 does not page them); [] if gone."""
        path = f"{API}/orders/{order_id}/notes"
        response = await self._request("GET", path, accept=(404,))
        return [] if response.status_code == 404 else self._list(response, "GET", path)


#: What was written on an order, an account or a product: the customer's note (an order's
#: ``customer_note``, given at checkout; an account's, where a checkout-field plugin keeps
#: one), each order note's text (``note``: a shop employee's, or one sent to the customer)
#: and what the person wrote in a review (``review``). An address of another quoted in them
#: is left out of the copy (Art. 15(4); :mod:`connector.others`).
CUSTOMER_WRITTEN = ("customer_note",)
NOTE_WRITTEN = ("note",)
REVIEW_WRITTEN = ("review",)
#: Who wrote an order note (``author``: a shop employee's display name, or "WooCommerce"),
#: another person, whom the copy leaves out as Pipedrive's leaves out a note's ``user``;
#: the note, its text, its date and whether it was sent to the customer stay.
NOTE_AUTHOR = ("author",)


def _copy_addresses(subject: Subject, customers: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The person's addresses, lower case: the one asked for, and the account's and its
    billing address's of each of their customer accounts."""
    held: list[Any] = [subject.email]
    for customer in customers:
        billing = customer.get("billing")
        held += [
            customer.get("email"),
            billing.get("email") if isinstance(billing, Mapping) else None,
        ]
    return own_addresses(*held)


def _account_copy(customer: Mapping[str, Any], own: frozenset[str]) -> dict[str, Any]:
    """A customer account as an access copy holds it: an address its note quotes that is
    none of ``own`` is left out."""
    return text_without_others(customer, CUSTOMER_WRITTEN, own)


def _order_copy(
    order: Mapping[str, Any], notes: Sequence[Mapping[str, Any]], own: frozenset[str]
) -> dict[str, Any]:
    """An order with its notes as an access copy holds them: an address their text quotes
    that is none of ``own`` nor the order's own billing address is left out, and so is who
    wrote each note (:data:`NOTE_AUTHOR`)."""
    billing = order.get("billing")
    own |= own_addresses(billing.get("email") if isinstance(billing, Mapping) else None)
    return {
        **text_without_others(order, CUSTOMER_WRITTEN, own),
        "notes": [
            text_without_others(note, NOTE_WRITTEN, own, leave_out=NOTE_AUTHOR) for note in notes
        ],
    }


def _review_copy(review: Mapping[str, Any], own: frozenset[str]) -> dict[str, Any]:
    """A product review as an access copy holds it (:func:`_review_record`): an address its
    text quotes that is none of ``own`` nor the one it was written under is left out."""
    own |= own_addresses(review.get("reviewer_email"))
    return _review_record(text_without_others(review, REVIEW_WRITTEN, own))


def _review_record(review: Mapping[str, Any]) -> dict[str, Any]:
    """A product review as an access copy and an erasure's reads list it: marked as one, the
    review as wc/v3 gives it under :data:`REVIEW_RECORD`."""
    return {"type": "review", REVIEW_RECORD: dict(review)}


def _addresses(subject: Subject, customers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The addresses guest orders of the subject are billed to: the one asked with, and the
    current one of each of their customer accounts where it differs. Asked under a former
    address (found by the identity map's id), a guest order placed since under the current
    one is theirs too."""
    addresses = [subject.email]
    for customer in customers:
        current = customer.get("email")
        if isinstance(current, str) and normalise_email(current) not in {
            normalise_email(a) for a in addresses
        }:
            addresses.append(current)
    return addresses


def _review_accounts(subject: Subject, customers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The user ids whose product reviews are the subject's: their accounts' and the one the
    identity map names (deleted from the shop, its reviews keep its id), not another
    subject's (Subject.spare). WordPress keeps the account's id on a review written while
    logged in, beside the address the person had then: one who changed it since is found
    by the id alone. Never 0: a guest's review has user id 0, and ``reviewer=0`` lists
    every guest's (WP_Comment_Query's ``author__in``)."""
    accounts = [str(customer["id"]) for customer in customers]
    known = _wp_id(subject.external_id)
    if known is not None:
        accounts.append(known)
    return [a for a in dict.fromkeys(accounts) if a not in subject.spare and _wp_id(a)]


def _written_by_another(review: Mapping[str, Any], own: Collection[str]) -> bool:
    """Whether ``review`` was written from a customer account none of ``own`` (the person's
    user ids: :func:`_review_accounts`), by the rule orders go by
    (:func:`~connector.adapter.placed_by_another`): a review found by the address it was
    written under is the person's only as a guest's (no account to say otherwise) or one of
    their own accounts'. Another customer may have written it from their account under the
    address (one who held it before the person): listed in the person's copy it gave away
    that customer's name and what they wrote, and anonymised by the person's erasure it
    took their name off their review."""
    writer = _reviewer_account(review)
    return writer is not None and writer not in own


def _reviewer_account(review: Mapping[str, Any]) -> str | None:
    """The user id of the account ``review`` was written from, or ``None`` for a guest's.

    The review's JSON has no field for it: WooCommerce gives the comment's user id only as
    a ``reviewer`` link (``.../wp/v2/users/<id>``), and only where it is not 0
    (``WC_REST_Product_Reviews_Controller::prepare_links`` [src]). A link that names no
    id this can read says nothing of whose the review is: it counts as none."""
    links = review.get("_links")
    # Not a mapping: no links, or PHP's empty array ([]) once _fields cut every one away.
    reviewer = links.get("reviewer") if isinstance(links, Mapping) else None
    for link in reviewer if isinstance(reviewer, list) else []:
        href = link.get("href") if isinstance(link, Mapping) else None
        named = REVIEWER_HREF.search(unquote(href)) if isinstance(href, str) else None
        if named is not None:
            return str(int(named.group(1)))
    return None


def _wp_id(external_id: str | None) -> str | None:
    """An identity map id as WordPress writes it (``"007"`` is customer 7), or ``None``."""
    if external_id and external_id.isdecimal() and int(external_id) > 0:
        return str(int(external_id))
    return None
