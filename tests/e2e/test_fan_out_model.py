"""The fan-out against a model, in random order: each destination holds what it should.

As tests/e2e/test_sync_model.py, with one shop feeding HubSpot, Mailchimp and Pipedrive and a
consent in play: Mailchimp receives only customers who opted in to marketing; one who opts
out after being sent is unsubscribed there and sent nothing else; one who never opted in is
never there; one who opts in again is asked by Mailchimp to confirm (pending: Mailchimp lets
nobody but the person re-subscribe someone who unsubscribed), once, and is subscribed when
they do.
Mailchimp changes the address of a subscribed member alone: the member of one who moves while
it is unsubscribed or asked to confirm stays under the former address (a dead letter says the
move was refused), and nobody is added under the new one; one who then opts in again is asked
to confirm at the new address, beside the unsubscribed member left under the former.
An erasure removes the person from all three, under every address they had. The store may
be backed up and restored between any two steps: nothing of that changes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from connector.dsr import DsrService
from connector.loop import new_event_loop
from connector.readmit import readmit
from connector.runtime import open_runtime
from tests.conftest import VirtualTime
from tests.e2e.store_rules import StoreBackups
from tests.e2e.test_multi_system import LISTS, World, write_config

NAMES = st.sampled_from(["Anna", "Bram", "Chantal", "Daan"])


class Customer:
    def __init__(self, email: str, first_name: str, consent: bool) -> None:
        self.emails = [email]
        self.first_name = first_name
        self.consent = consent
        #: Their Mailchimp status on each audience as the model expects it: None (never
        #: sent), "subscribed", "unsubscribed" (opted out after being sent), "pending" (opted
        #: in again since: asked to confirm), or "maybe" (a sync cut short may or may not
        #: have written what their consent asked for; the next full sync settles it, and
        #: the audience says which way). Per audience: a write can reach one and not the other.
        self.news: dict[str, str | None] = dict.fromkeys(LISTS)
        #: (audience, address) pairs Mailchimp deleted permanently before they came back
        #: (readmitted after an erasure): it refuses to add that address again (the refusal
        #: is a dead letter), so no member there while they keep it.
        self.forgotten: set[tuple[str, str]] = set()
        self.erased = False
        #: Their erasure while Pipedrive was down, and whether Pipedrive's part of it was
        #: exempted (dsr exempt): Pipedrive then keeps what it held of them.
        self.erasure: str | None = None
        self.kept_in_deals = False

    @property
    def email(self) -> str:
        return self.emails[-1]


def _opt_in(consent: bool) -> list[dict[str, str]]:
    return [{"key": "marketing_opt_in", "value": "yes" if consent else "no"}]


class FanOutModel(StoreBackups):
    customers = Bundle("customers")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="klantsync-fanout-"))
        self.world = World()
        self.config = write_config(self.directory, self.world)
        self.loop = new_event_loop()
        self._open()
        self.everyone: list[Customer] = []
        #: Erased while Pipedrive was down: their requests are open until retried.
        self.pending: list[Customer] = []
        #: A correction is open (Pipedrive was down) until retried.
        self.corrections_open = False
        self.next_address = 0
        self.access_requests = 0
        self.synced = True

    def _open(self) -> None:
        time = VirtualTime()
        self.context = open_runtime(
            self.config, transports=self.world.transports(), sleep=time.sleep, clock=time.clock
        )
        self.rt = self.loop.run_until_complete(self.context.__aenter__())

    def _close(self) -> None:
        self.loop.run_until_complete(self.context.__aexit__(None, None, None))

    def teardown(self) -> None:
        self._close()
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _address(self) -> str:
        self.next_address += 1
        return f"klant{self.next_address}@voorbeeld.nl"

    @rule(target=customers, first_name=NAMES, consent=st.booleans())
    def a_customer_signs_up(self, first_name: str, consent: bool) -> Customer:
        customer = Customer(self._address(), first_name, consent)
        self.world.shop.add_person(customer.email, first_name, "Klant", meta_data=_opt_in(consent))
        self.everyone.append(customer)
        self.synced = False
        return customer

    @rule(customer=customers, consent=st.booleans())
    def a_customer_changes_their_mind_about_newsletters(
        self, customer: Customer, consent: bool
    ) -> None:
        if customer.erased:
            return
        self.world.shop.touch(customer.email, meta_data=_opt_in(consent))
        customer.consent = consent
        self.synced = False

    @rule(customer=customers)
    def a_subscriber_opts_out_and_in_again_with_a_sync_between(self, customer: Customer) -> None:
        """The way to a renewal, which single steps in random order seldom take: sent,
        withdrawn, and given again; the next sync asks them to confirm."""
        if customer.erased or not customer.consent:
            return
        self.a_sync()
        self.a_customer_changes_their_mind_about_newsletters(customer, False)
        self.a_sync()
        self.a_customer_changes_their_mind_about_newsletters(customer, True)

    @rule(customer=customers)
    def a_member_confirms_by_the_link_mailchimp_sent(self, customer: Customer) -> None:
        """A member asked to confirm clicks the link: subscribed, and later syncs keep it."""
        if customer.erased:
            return
        for list_id, state in customer.news.items():
            if state == "pending":
                member = self._member(list_id, customer)
                assert member is not None and member["status"] == "pending"
                self.world.news.confirm(list_id, member["email_address"])
                customer.news[list_id] = "subscribed"

    @rule(customer=customers, first_name=NAMES)
    def a_customer_changes_their_name(self, customer: Customer, first_name: str) -> None:
        if customer.erased:
            return
        self.world.shop.touch(customer.email, first_name=first_name)
        customer.first_name = first_name
        self.synced = False

    @rule(customer=customers)
    def a_customer_changes_their_address(self, customer: Customer) -> None:
        if customer.erased:
            return
        new = self._address()
        self.world.shop.touch(customer.email, email=new)
        customer.emails.append(new)
        self.synced = False

    @rule(customer=customers, first_name=NAMES)
    def a_customer_asks_to_correct_their_name(self, customer: Customer, first_name: str) -> None:
        """Rectification: every system that holds them is corrected (a Mailchimp member's
        status, their consent, is left as it is), the shop included."""
        if customer.erased:
            return
        view = self.loop.run_until_complete(
            DsrService(self.rt).rectify(customer.email, {"first_name": first_name})
        )
        assert not view.is_open, [(s.system, s.status) for s in view.systems]
        customer.first_name = first_name

    @rule(customer=customers)
    def a_customer_asks_what_is_held(self, customer: Customer) -> None:
        """Access: the bundle holds what each destination holds of them, under any address."""
        if customer.erased:
            return
        self.access_requests += 1
        target = self.directory / f"bundle-{self.access_requests}"
        view = self.loop.run_until_complete(DsrService(self.rt).access(customer.email, target))
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
        data = json.loads((target / "data.json").read_text())
        crm = [a for a in customer.emails if self.world.crm.holds(a)]
        deals = [a for a in customer.emails if self.world.deals.holds(a)]
        assert len(data["systems"]["crm"]["records"]) == len(crm)
        assert len(data["systems"]["deals"]["records"]) == len(deals)
        members = [
            m for lst in LISTS for a in customer.emails if (m := self.world.news.member(lst, a))
        ]
        assert len(data["systems"]["news"]["records"]) == len(members)

    @rule(customer=consumes(customers))
    def a_customer_asks_to_be_forgotten(self, customer: Customer) -> None:
        view = self.loop.run_until_complete(DsrService(self.rt).erase(customer.email))
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
        customer.erased = True

    @rule(customer=consumes(customers))
    def a_customer_asks_to_be_forgotten_while_pipedrive_is_down(self, customer: Customer) -> None:
        self.world.deals.faults.down = True
        try:
            view = self.loop.run_until_complete(DsrService(self.rt).erase(customer.email))
        finally:
            self.world.deals.faults.down = False
        assert view.status == "open" and view.system("deals").status != "verified_absent"
        customer.erased = True
        customer.erasure = view.id
        self.pending.append(customer)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def pipedrive_s_part_of_an_open_erasure_is_exempted(self, data: st.DataObject) -> None:
        """The operator exempts Pipedrive (a legal claim): the request completes, and no
        retry erases there; Pipedrive keeps what it held, and no sync sends them again."""
        customer = data.draw(st.sampled_from(self.pending))
        assert customer.erasure is not None
        view = DsrService(self.rt).exempt(customer.erasure, "deals", "kept for a legal claim")
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
        assert view.system("deals").status == "exempt"
        self.pending.remove(customer)
        customer.kept_in_deals = True

    def _readmittable(self) -> list[tuple[Customer, str]]:
        """Erased customers' addresses on the suppression list (an address they had only
        before a move no sync saw never reached any system, so nothing suppressed it)."""
        return [
            (c, address)
            for c in self.everyone
            # Not one Pipedrive keeps for a legal claim: that record is the claim's, and the
            # connector would not know it as the returning person's until a sync linked them.
            if c.erased and c not in self.pending and not c.kept_in_deals
            for address in c.emails
            if self.rt.store.suppressed([self.rt.keyring.subject_id(address)])
        ]

    @precondition(lambda self: bool(self._readmittable()))
    @rule(target=customers, data=st.data(), first_name=NAMES, consent=st.booleans())
    def an_erased_customer_signs_up_again_and_is_readmitted(
        self, data: st.DataObject, first_name: str, consent: bool
    ) -> Customer:
        """Back of their own accord under an address they were erased with: a new shop
        record, kept out by the suppression list until an operator readmits the address;
        then sent as anyone new. Their other addresses stay erased."""
        former, address = data.draw(st.sampled_from(self._readmittable()))
        former.emails.remove(address)  # theirs again; the others stay erased
        customer = Customer(address, first_name, consent)
        customer.forgotten = {
            (lst, address) for lst in LISTS if self.world.news.is_forgotten(lst, address)
        }
        self.world.shop.add_person(address, first_name, "Klant", meta_data=_opt_in(consent))
        readmit(self.rt, address, "signed up again with a new consent")
        self.everyone.append(customer)
        self.synced = False
        return customer

    @rule(customer=customers, first_name=NAMES)
    def a_customer_asks_to_correct_their_name_while_pipedrive_is_down(
        self, customer: Customer, first_name: str
    ) -> None:
        """The correction stays open for Pipedrive. Asked again meanwhile (this rule or the
        one above), it joins the open request: retried later, the name asked last stays."""
        if customer.erased:
            return
        self.world.deals.faults.down = True
        try:
            view = self.loop.run_until_complete(
                DsrService(self.rt).rectify(customer.email, {"first_name": first_name})
            )
        finally:
            self.world.deals.faults.down = False
        assert view.is_open and view.system("deals").status == "failed"
        customer.first_name = first_name
        self.corrections_open = True
        self.synced = False  # Pipedrive holds the old name until a sync or the retry

    @precondition(lambda self: bool(self.pending) or self.corrections_open)
    @rule()
    def open_requests_are_retried(self) -> None:
        self.loop.run_until_complete(DsrService(self.rt).retry_open())
        self.pending.clear()
        self.corrections_open = False

    @rule(
        calls=st.integers(min_value=1, max_value=12),
        system=st.sampled_from(["crm", "news", "deals"]),
    )
    def a_sync_a_destination_fails_halfway_through(self, calls: int, system: str) -> None:
        faults = getattr(self.world, system).faults
        faults.fail_next, faults.fail_status = calls, 503
        try:
            self.loop.run_until_complete(self.rt.engine.sync("shop"))
        finally:
            faults.fail_next = 0
        for customer in self.everyone:
            for lst, state in customer.news.items():
                # Sent or not, withdrawn or not, as the failures fell.
                if (customer.consent and state is None) or (
                    not customer.consent and state in ("subscribed", "pending")
                ):
                    customer.news[lst] = "maybe"
        self.synced = False

    @rule()
    def a_sync(self) -> None:
        (report,) = self.loop.run_until_complete(self.rt.engine.sync("shop"))
        refused = {n for n, d in report.destinations.items() if d.dead_lettered}
        if any(c.forgotten and c.consent for c in self.everyone):
            refused.discard("news")  # an address it forgot, refused as it should be
        if any(self._left_behind(c) for c in self.everyone if not c.erased):
            refused.discard("news")  # a move Mailchimp refuses, as it should
        assert not report.errors and not refused, (report.errors, refused)
        assert not any(d.retry_later or d.not_erased for d in report.destinations.values())
        for customer in (c for c in self.everyone if not c.erased):
            for lst, state in customer.news.items():
                customer.news[lst] = self._after_a_sync(customer, lst, state)
        self.synced = True

    def _after_a_sync(self, customer: Customer, lst: str, state: str | None) -> str | None:
        """A customer's status on one audience once a sync went through, given the last."""
        if (lst, customer.email) in customer.forgotten:
            # The audience refuses this address: nothing is there, whatever their consent
            # did since, until they move to another.
            return None
        if state == "maybe":
            # A sync cut short wrote what their consent asked for, or not; this one did.
            # Consenting: subscribed if no withdrawal landed, asked to confirm if one did.
            # Not: unsubscribed where they were sent, absent where not.
            member = self._member(lst, customer)
            found = None if member is None else member["status"]
            wanted = ("subscribed", "pending") if customer.consent else (None, "unsubscribed")
            if self._left_behind(customer, lst):
                # Under a former address, where a refused move left it.
                wanted = (*wanted, "unsubscribed")
            assert found in wanted, (lst, found, customer.consent)
            return found
        if customer.consent and state is None:
            return "subscribed"
        if customer.consent and state == "unsubscribed":
            return "pending"
        if not customer.consent and state in ("subscribed", "pending"):
            return "unsubscribed"
        return state

    @invariant()
    def nobody_erased_is_anywhere(self) -> None:
        for customer in (c for c in self.everyone if c.erased):
            for address in customer.emails:
                assert not self.world.crm.holds(address)
                assert all(self.world.news.member(lst, address) is None for lst in LISTS)
                # Unless Pipedrive's part waits for the retry, or was exempted.
                if customer not in self.pending and not customer.kept_in_deals:
                    assert not self.world.deals.holds(address)

    @invariant()
    def after_a_sync_each_destination_holds_what_it_should(self) -> None:
        if not self.synced:
            return
        for customer in (c for c in self.everyone if not c.erased):
            crm = self.world.crm.record_for(customer.email)
            assert crm is not None and crm["properties"]["firstname"] == customer.first_name
            deals = self.world.deals.record_for(customer.email)  # nobody pending is kept
            assert deals is not None and deals["first_name"] == customer.first_name
            for address in customer.emails[:-1]:
                assert not self.world.crm.holds(address)
                assert not self.world.deals.holds(address)
            for list_id in LISTS:
                member = self._member(list_id, customer)
                if (list_id, customer.email) in customer.forgotten:
                    assert member is None, "a forgotten address added again"
                    continue
                if customer.news[list_id] is None:
                    assert member is None, "sent to the newsletter without consent"
                    continue
                assert member is not None and member["status"] == customer.news[list_id]
                if customer.consent and not self._left_behind(customer, list_id):
                    assert member["merge_fields"]["FNAME"] == customer.first_name

    def _left_behind(self, customer: Customer, list_id: str | None = None) -> bool:
        """Whether a member of theirs that is not subscribed is under a former address (on
        ``list_id``, or on any audience): Mailchimp refused to move it to the current one."""
        members = (self._member(lst, customer) for lst in ([list_id] if list_id else LISTS))
        return any(
            m is not None and m["email_address"] != customer.email and m["status"] != "subscribed"
            for m in members
        )

    def _member(self, list_id: str, customer: Customer) -> dict[str, Any] | None:
        """Their member on the audience: the one under their latest address that has one.
        Beside it may stay only unsubscribed ones under former addresses, which Mailchimp
        would not move when they opted in again under a new address."""
        found = [self.world.news.member(list_id, a) for a in customer.emails]
        live = [m for m in found if m is not None]
        assert all(m["status"] == "unsubscribed" for m in live[:-1]), "one person, two members"
        return live[-1] if live else None


def test_each_destination_always_holds_what_it_should() -> None:
    run_state_machine_as_test(
        FanOutModel,
        settings=settings(
            max_examples=100,
            stateful_step_count=16,
            derandomize=True,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
