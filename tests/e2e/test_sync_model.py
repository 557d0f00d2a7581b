"""The sync and erasure against a model, in random order: what the CRM holds is always what it
should.

A hypothesis state machine drives a shop and a CRM (both sandboxes, in process) through any
sequence of: a customer added, renamed, or given a new e-mail address; a customer erased
(through the data subject request service, as `klantsync dsr erase` does); a backup restored
that brings an erased customer back into the shop; a sync, a sync the CRM fails halfway
through, a restart, and the connector's store backed up and restored. After every sync
that ran to its end, the CRM must hold exactly the shop's customers who were never erased,
each once, with the names the shop has now, and nobody who was erased under any of the
addresses they ever had.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
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

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.dsr import DsrService
from connector.loop import new_event_loop
from connector.runtime import open_runtime
from connector.targeted import sync_subjects
from tests.conftest import ENV, VirtualTime, write_config
from tests.e2e.store_rules import StoreBackups

NAMES = st.sampled_from(["Anna", "Bram", "Chantal", "Daan", "Eva", "Femke"])


class Person:
    """One customer of the model: every address they had, the one they have now, their name."""

    def __init__(self, email: str, first_name: str) -> None:
        self.emails = [email]
        self.first_name = first_name
        self.in_shop = True
        self.erased = False
        #: The shop's record as each backup caught it (same id, the address of the time).
        self.backups: list[dict[str, Any]] = []

    @property
    def email(self) -> str:
        return self.emails[-1]


class SyncModel(StoreBackups):
    people = Bundle("people")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.directory = Path(tempfile.mkdtemp(prefix="klantsync-model-"))
        self.config = write_config(self.directory)
        self.shop = WooCommerceSandbox()
        self.crm = HubSpotSandbox(rate_limit=None)
        self.loop = new_event_loop()
        self.next_address = 0
        self.access_requests = 0
        self.everyone: list[Person] = []
        #: Erased while the CRM was down: their requests are open until retried.
        self.pending: list[Person] = []
        self.synced = True  # the CRM is expected to match the model (no sync cut short since)
        self._open()

    # -- the runtime --------------------------------------------------------------------------

    def _open(self) -> None:
        time = VirtualTime()
        transports = {
            "shop": httpx.ASGITransport(app=self.shop.app()),
            "crm": httpx.ASGITransport(app=self.crm.app()),
        }
        self.context = open_runtime(
            self.config, transports=transports, sleep=time.sleep, clock=time.clock
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

    # -- what happens in the shop -------------------------------------------------------------

    @rule(target=people, first_name=NAMES)
    def a_customer_signs_up(self, first_name: str) -> Person:
        person = Person(self._address(), first_name)
        self.shop.add_person(person.email, first_name, "Klant")
        self.everyone.append(person)
        self._back_up(person)
        self.synced = False
        return person

    @rule(person=people, first_name=NAMES)
    def a_customer_changes_their_name(self, person: Person, first_name: str) -> None:
        if not person.in_shop:
            return
        self.shop.touch(person.email, first_name=first_name)
        person.first_name = first_name
        self._back_up(person)
        self.synced = False

    @rule(person=people)
    def a_customer_changes_their_address(self, person: Person) -> None:
        if not person.in_shop:
            return
        new = self._address()
        self.shop.touch(person.email, email=new)
        person.emails.append(new)
        self._back_up(person)
        self.synced = False

    @rule(person=people, first_name=NAMES)
    def a_customer_asks_to_correct_their_name(self, person: Person, first_name: str) -> None:
        """Rectification (Art. 16) through the request service: every system that holds the
        person is corrected, the shop included, so the next sync keeps the correction."""
        if person.erased or not person.in_shop:
            return
        view = self.loop.run_until_complete(
            DsrService(self.rt).rectify(person.email, {"first_name": first_name})
        )
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
        person.first_name = first_name
        self._back_up(person)
        record = self.shop.record_for(person.email)
        assert record is not None and record["first_name"] == first_name
        held = self.crm.record_for(person.email)
        if held is not None:  # the CRM corrects what it holds and adds nobody
            assert held["properties"]["firstname"] == first_name

    @rule(person=people)
    def a_customer_asks_what_is_held(self, person: Person) -> None:
        """Access (Art. 15) under the address the person has now: whatever the CRM holds of
        them, under any address they had, is in the bundle."""
        if person.erased or not person.in_shop:
            return
        self.access_requests += 1
        target = self.directory / f"bundle-{self.access_requests}"
        view = self.loop.run_until_complete(DsrService(self.rt).access(person.email, target))
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
        data = json.loads((target / "data.json").read_text())
        held = [a for a in person.emails if self.crm.holds(a)]
        assert len(data["systems"]["crm"]["records"]) == len(held)

    @rule(person=consumes(people))
    def a_customer_asks_to_be_forgotten(self, person: Person) -> None:
        view = self.loop.run_until_complete(DsrService(self.rt).erase(person.email))
        assert view.status == "completed", view.status
        person.erased = True
        person.in_shop = False  # the erasure deletes them in the shop too
        assert not self.shop.holds(person.email)

    @rule(person=consumes(people))
    def a_customer_asks_to_be_forgotten_while_the_crm_is_down(self, person: Person) -> None:
        self.crm.faults.down = True
        try:
            view = self.loop.run_until_complete(DsrService(self.rt).erase(person.email))
        finally:
            self.crm.faults.down = False
        assert view.status == "open" and view.system("crm").status != "verified_absent"
        person.erased = True
        person.in_shop = not view.system("shop").status.startswith(("verified", "not_held"))
        self.pending.append(person)

    @precondition(lambda self: bool(self.pending))
    @rule()
    def open_requests_are_retried(self) -> None:
        self.loop.run_until_complete(DsrService(self.rt).retry_open())
        for person in self.pending:
            person.in_shop = False
        self.pending.clear()

    def _back_up(self, person: Person) -> None:
        record = self.shop.record_for(person.email)
        assert record is not None
        person.backups.append(record)

    @precondition(lambda self: any(p.erased for p in self.everyone))
    @rule(data=st.data())
    def a_backup_brings_an_erased_customer_back_into_the_shop(self, data: Any) -> None:
        """The shop restores a backup taken before the erasure: the same record (same id),
        under whichever address the person had then, even one never synced."""
        erased = [p for p in self.everyone if p.erased]
        person = data.draw(st.sampled_from(erased))
        record = data.draw(st.sampled_from(person.backups))
        if self.shop.holds(record["email"]) or self.shop.store.get(record["id"]) is not None:
            return
        self.shop.store.save(record)

    # -- what the connector does --------------------------------------------------------------

    @rule()
    def a_sync(self) -> None:
        (report,) = self.loop.run_until_complete(self.rt.engine.sync())
        assert not report.failed, report.errors
        self.synced = True

    @rule(person=people, by_id=st.booleans())
    def a_webhook_tells_of_a_customer(self, person: Person, by_id: bool) -> None:
        """WooCommerce's customer.updated delivery (the customer's id and address) or a
        resync (the id alone): the customer is fetched and run alone through the flow."""
        record = self.shop.record_for(person.email)
        if record is None:
            return
        subjects = [(str(record["id"]), None if by_id else person.email)]
        reports = self.loop.run_until_complete(sync_subjects(self.rt, "shop", subjects))
        assert all(not r.failed for r in reports), [r.errors for r in reports]
        if not person.erased:
            held = self.crm.record_for(person.email)
            assert held is not None and held["properties"]["firstname"] == person.first_name
            for old in person.emails[:-1]:
                assert not self.crm.holds(old), "the old address is a second contact"

    @rule(calls=st.integers(min_value=1, max_value=10))
    def a_sync_the_crm_fails_halfway_through(self, calls: int) -> None:
        self.crm.faults.fail_next = calls
        self.crm.faults.fail_status = 503
        self.loop.run_until_complete(self.rt.engine.sync())
        self.crm.faults.fail_next = 0
        self.synced = False

    @rule()
    def a_restart(self) -> None:
        self._close()
        self._open()

    # -- what must hold -----------------------------------------------------------------------

    @invariant()
    def the_crm_holds_nobody_ever_erased(self) -> None:
        for person in self.everyone:
            if person.erased and person not in self.pending:
                for address in person.emails:
                    assert not self.crm.holds(address), "an erased customer is in the CRM"

    @invariant()
    def after_a_full_sync_the_crm_holds_each_customer_once_as_the_shop_has_them(self) -> None:
        if not self.synced:
            return
        kept = [p for p in self.everyone if not p.erased]
        for person in kept:
            record = self.crm.record_for(person.email)
            assert record is not None, "a customer is missing from the CRM"
            assert record["properties"]["firstname"] == person.first_name
            for old in person.emails[:-1]:
                assert not self.crm.holds(old), "a customer's old address is a second contact"
        # Someone whose erasure waits for the CRM to come back may still be there, once.
        waiting = sum(any(self.crm.holds(a) for a in p.emails) for p in self.pending)
        assert self.crm.contact_count() == len(kept) + waiting


def test_the_crm_always_holds_what_it_should() -> None:
    saved = {key: os.environ.get(key) for key in ENV}
    os.environ.update(ENV)
    try:
        run_state_machine_as_test(
            SyncModel,
            settings=settings(
                max_examples=60,
                stateful_step_count=20,
                derandomize=True,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
