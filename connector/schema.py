"""The store's schema: its migrations, in order; ``PRAGMA user_version`` is how many ran.

Each entry is one SQL script, run by :class:`connector.state.Store` when it opens an older
store, in one transaction with every other step the store lacks (a crash mid-way leaves the
schema the upgrade started from). A step cannot set a PRAGMA that holds outside a transaction
(``foreign_keys``): the upgrade leaves foreign keys unenforced around its transaction and
checks them before it commits. A migration is never edited once released: a store out there
has run it as written. The comment before each says what it adds and why.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "statements"]

#: Ordered schema migrations; the index + 1 is the schema version (``PRAGMA user_version``).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE cursors (
        flow TEXT NOT NULL, system TEXT NOT NULL, cursor TEXT, updated_at TEXT NOT NULL,
        PRIMARY KEY (flow, system)
    );
    CREATE TABLE identities (
        system TEXT NOT NULL, subject_id TEXT NOT NULL, external_id TEXT NOT NULL,
        PRIMARY KEY (system, subject_id)
    ) WITHOUT ROWID;
    CREATE INDEX identities_external ON identities (system, external_id);
    CREATE TABLE delivered (
        system TEXT NOT NULL, subject_id TEXT NOT NULL, payload_hash TEXT NOT NULL,
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (system, subject_id)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        system TEXT NOT NULL, subject_id TEXT NOT NULL, flow TEXT NOT NULL,
        payload BLOB NOT NULL, payload_hash TEXT NOT NULL,
        enqueued_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        UNIQUE (system, subject_id)
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        system TEXT NOT NULL, subject_id TEXT NOT NULL, flow TEXT NOT NULL,
        payload BLOB NOT NULL, reason TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE INDEX dead_letters_subject ON dead_letters (subject_id);
    CREATE TABLE suppression (
        subject_id TEXT PRIMARY KEY, kind TEXT NOT NULL, request_id TEXT, created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, flow TEXT NOT NULL, started_at TEXT NOT NULL,
        finished_at TEXT, status TEXT NOT NULL, summary TEXT
    );
    CREATE INDEX runs_flow ON runs (flow, id);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL,
        subject_id TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
    );
    """,
    # 2: data subject requests (connector/dsr.py). The manifest holds the subject's e-mail,
    # phone and every system's ids, sealed; it is destroyed when every system is done.
    """
    CREATE TABLE dsr_requests (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject_id TEXT NOT NULL,
        received_at TEXT NOT NULL, deadline TEXT NOT NULL, extension_reason TEXT,
        status TEXT NOT NULL, source TEXT NOT NULL,
        manifest BLOB, payload BLOB, receipt TEXT, completed_at TEXT
    );
    CREATE INDEX dsr_requests_subject ON dsr_requests (subject_id);
    CREATE INDEX dsr_requests_status ON dsr_requests (status, deadline);
    CREATE TABLE dsr_systems (
        request_id TEXT NOT NULL REFERENCES dsr_requests(id), system TEXT NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, detail TEXT,
        result TEXT, updated_at TEXT NOT NULL,
        PRIMARY KEY (request_id, system)
    ) WITHOUT ROWID;
    """,
    # 3: the daemon (connector/daemon.py): queued jobs, webhook replay guard, single-runner lease.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, params BLOB, status TEXT NOT NULL,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, result TEXT
    );
    CREATE INDEX jobs_status ON jobs (status, id);
    CREATE TABLE webhook_deliveries (
        system TEXT NOT NULL, delivery_id TEXT NOT NULL, received_at TEXT NOT NULL,
        PRIMARY KEY (system, delivery_id)
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: accountability (connector/audit.py, retention.py, incidents.py). audit_chain is the
    # audit log's head and anchor, updated in the same transaction as every append or purge
    # (the initial row adopts whatever chain an older store already holds); bundles are the
    # access bundles written, for their retention; incidents are personal-data breach clocks.
    """
    CREATE TABLE audit_chain (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        anchor_seq INTEGER NOT NULL, anchor_hash TEXT NOT NULL,
        head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL
    );
    INSERT INTO audit_chain(id, anchor_seq, anchor_hash, head_seq, head_hash) VALUES (
        1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
        COALESCE((SELECT MAX(seq) FROM audit), 0),
        COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1),
                 '0000000000000000000000000000000000000000000000000000000000000000')
    );
    CREATE TABLE bundles (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL, files TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY, summary TEXT NOT NULL, aware_at TEXT NOT NULL,
        opened_at TEXT NOT NULL, deadline TEXT NOT NULL, systems TEXT NOT NULL,
        scope TEXT NOT NULL, closed_at TEXT, close_note TEXT
    );
    """,
    # 5: a dead letter remembers the hash of what was refused, so the same payload is not sent
    # again on every sync (only once the record changes, or on a --full sync).
    """
    ALTER TABLE dead_letters ADD COLUMN payload_hash TEXT;
    CREATE INDEX dead_letters_system_subject ON dead_letters (system, subject_id);
    """,
    # 6: the subject ids a person had before their e-mail address changed (connector/moves.py),
    # so an erasure reaches and suppresses them all.
    """
    CREATE TABLE subject_aliases (
        subject_id TEXT NOT NULL, alias TEXT NOT NULL, PRIMARY KEY (subject_id, alias)
    ) WITHOUT ROWID;
    CREATE INDEX subject_aliases_alias ON subject_aliases (alias);
    """,
    # 7: a destination's next batch is its rows in id order past the last one taken. Without
    # this index SQLite found them through (system, subject_id): every row the destination had
    # waiting, payloads included, read and sorted for each batch of 50 or 100, so a batch cost
    # grew with the backlog (a slow destination's backlog grows by the pull's pace).
    """
    CREATE INDEX outbox_system_id ON outbox (system, id);
    """,
    # 8: a person's rows in the per-system tables are keyed by a number this store gives them
    # (``subjects``), not by their 32-character subject id. Subject ids are HMACs, so new
    # people landed at random places in every one of those b-trees: a page of 100 new
    # customers dirtied ~100 pages of each, and each commit wrote them all to the WAL
    # (~15 KB of log per new customer). Numbers are handed out in order, so a page's new
    # rows sit side by side at the end of each tree; only ``subjects`` itself takes the
    # random insert, once per person. Rows are copied in the same transaction.
    """
    CREATE TABLE subjects (
        subject_no INTEGER PRIMARY KEY, subject_id TEXT NOT NULL UNIQUE
    );
    INSERT INTO subjects(subject_id)
        SELECT subject_id FROM identities UNION SELECT subject_id FROM delivered
        UNION SELECT subject_id FROM outbox;
    CREATE TABLE identities_v8 (
        system TEXT NOT NULL, subject_no INTEGER NOT NULL, external_id TEXT NOT NULL,
        PRIMARY KEY (system, subject_no)
    ) WITHOUT ROWID;
    INSERT INTO identities_v8(system, subject_no, external_id)
        SELECT i.system, s.subject_no, i.external_id
        FROM identities i JOIN subjects s ON s.subject_id = i.subject_id;
    DROP TABLE identities;
    ALTER TABLE identities_v8 RENAME TO identities;
    CREATE INDEX identities_external ON identities (system, external_id);
    CREATE TABLE delivered_v8 (
        system TEXT NOT NULL, subject_no INTEGER NOT NULL, payload_hash TEXT NOT NULL,
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (system, subject_no)
    ) WITHOUT ROWID;
    INSERT INTO delivered_v8(system, subject_no, payload_hash, delivered_at)
        SELECT d.system, s.subject_no, d.payload_hash, d.delivered_at
        FROM delivered d JOIN subjects s ON s.subject_id = d.subject_id;
    DROP TABLE delivered;
    ALTER TABLE delivered_v8 RENAME TO delivered;
    CREATE TABLE outbox_v8 (
        id INTEGER PRIMARY KEY,
        system TEXT NOT NULL, subject_no INTEGER NOT NULL, flow TEXT NOT NULL,
        payload BLOB NOT NULL, payload_hash TEXT NOT NULL,
        enqueued_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        UNIQUE (system, subject_no)
    );
    INSERT INTO outbox_v8(id, system, subject_no, flow, payload, payload_hash, enqueued_at,
                          attempts)
        SELECT o.id, o.system, s.subject_no, o.flow, o.payload, o.payload_hash, o.enqueued_at,
               o.attempts
        FROM outbox o JOIN subjects s ON s.subject_id = o.subject_id;
    DROP TABLE outbox;
    ALTER TABLE outbox_v8 RENAME TO outbox;
    CREATE INDEX outbox_system_id ON outbox (system, id);
    """,
    # 9: the data keys, wrapped by the master key (connector/keyset.py). Written on the first
    # open that has a master key; one row.
    """
    CREATE TABLE keyset (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        wrapped BLOB NOT NULL, master_fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL, rotated_at TEXT
    );
    """,
    # 10: an access bundle's path is sealed (connector/retention.py): an operator may name an
    # --out folder after the person. Rows from before are copied with their clear text, which
    # the first open with the store's keys seals (connector/keyset.py).
    """
    CREATE TABLE bundles_v10 (
        id INTEGER PRIMARY KEY, path BLOB NOT NULL, files TEXT NOT NULL, created_at TEXT NOT NULL
    );
    INSERT INTO bundles_v10(id, path, files, created_at)
        SELECT id, path, files, created_at FROM bundles;
    DROP TABLE bundles;
    ALTER TABLE bundles_v10 RENAME TO bundles;
    """,
    # 11: one dead letter per subject and system. Each refusal used to add a row, so every
    # --full sync that was refused again added another (sealed payload included) and
    # `status` listed the same record many times. The row now holds the latest refusal
    # (payload, hash, reason, created_at: when it was last refused), and says since when and
    # how often the record has been refused. Rows already there are folded into their
    # newest; the unique index is what the refusal's upsert and the lookup of refused hashes
    # go through.
    """
    ALTER TABLE dead_letters ADD COLUMN first_refused_at TEXT;
    ALTER TABLE dead_letters ADD COLUMN refusals INTEGER NOT NULL DEFAULT 1;
    UPDATE dead_letters SET
        first_refused_at = (SELECT MIN(d.created_at) FROM dead_letters d
                            WHERE d.system = dead_letters.system
                            AND d.subject_id = dead_letters.subject_id),
        refusals = (SELECT COUNT(*) FROM dead_letters d
                    WHERE d.system = dead_letters.system
                    AND d.subject_id = dead_letters.subject_id);
    DELETE FROM dead_letters
        WHERE id NOT IN (SELECT MAX(id) FROM dead_letters GROUP BY system, subject_id);
    DROP INDEX dead_letters_system_subject;
    CREATE UNIQUE INDEX dead_letters_system_subject ON dead_letters (system, subject_id);
    """,
    # 12: a count of changes to the suppression list, kept by triggers. A sync checks each
    # page against the list three times (before queueing, before sending, after the answer);
    # it keeps the list in memory and reads it again only when this count has moved, which
    # one row's read tells. Triggers, not the code that writes the list, keep the count: a
    # write from any process, or from code added later, cannot leave a copy stale. A later
    # migration that rebuilds ``suppression`` drops them with it and must create them again
    # (tests/connector/test_state.py checks they are there).
    """
    CREATE TABLE suppression_changes (
        id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL
    );
    INSERT INTO suppression_changes(id, n) VALUES (1, 0);
    CREATE TRIGGER suppression_added AFTER INSERT ON suppression
        BEGIN UPDATE suppression_changes SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER suppression_removed AFTER DELETE ON suppression
        BEGIN UPDATE suppression_changes SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER suppression_changed AFTER UPDATE ON suppression
        BEGIN UPDATE suppression_changes SET n = n + 1 WHERE id = 1; END;
    """,
    # 13: the audit trail's entries of one kind, newest first, without reading the whole
    # trail: `status`, `/metrics` and the daemon's daily review ask when the last backup and
    # restore were (connector/backup.py), and a store that never had one would otherwise be
    # read from end to start each time.
    """
    CREATE INDEX audit_kind ON audit (kind, seq);
    """,
    # 14: whose access bundle a bundle is (the subject's HMAC id), so that an erasure of the
    # person deletes the bundle too instead of leaving their data in clear until the sweep.
    # Rows from before have none, and are left to the sweep.
    """
    ALTER TABLE bundles ADD COLUMN subject_id TEXT;
    CREATE INDEX bundles_subject ON bundles (subject_id);
    """,
    # 15: dead letters whose record was delivered after its last refusal. Before schema 11 a
    # delivery did not clear the subject's dead letter, so a store from then still lists (in
    # `status`, sealed payload and all) records the system has accepted since.
    """
    DELETE FROM dead_letters WHERE EXISTS (
        SELECT 1 FROM subjects s CROSS JOIN delivered d
        WHERE s.subject_id = dead_letters.subject_id
        AND d.system = dead_letters.system AND d.subject_no = s.subject_no
        AND d.delivered_at > dead_letters.created_at
    );
    """,
    # 16: a flow's last success found through an index: the readiness probe (every few
    # seconds) and `status` read it, and through (flow, id) that read every run the flow
    # ever had.
    """
    CREATE INDEX runs_success ON runs (flow, status, finished_at);
    """,
    # 17: what a cursor was set under: a digest of its flow's destinations and the mapping
    # files of its systems. A flow given another destination (or a mapping another field)
    # and read from a cursor past everyone never offered them the customers already read;
    # a cursor set under another shape is not used (the source is read in full once).
    # NULL: set by an earlier version, used as it is.
    """
    ALTER TABLE cursors ADD COLUMN shape TEXT;
    """,
    # 18: who opted out at a system itself (an unsubscribe in Mailchimp, by its webhook):
    # that system is sent their withdrawal and nothing else, whatever the source's consent
    # says, until they subscribe there again. Keyed by the subject's HMAC id, as dead
    # letters are: an erasure deletes it, a move carries it.
    """
    CREATE TABLE opt_outs (
        system TEXT NOT NULL, subject_id TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (system, subject_id)
    ) WITHOUT ROWID;
    """,
    # 19: a write queued under a person's former address, kept with their row when they moved
    # (connector/moves.py): it may have landed with its answer lost, and goes first, so the
    # record it made is found by that address instead of a second one made. Sealed as the
    # payload it was; NULL on nearly every row.
    """
    ALTER TABLE outbox ADD COLUMN former BLOB;
    """,
    # 20: a subject number is never handed out twice. ``subjects.subject_no`` is an INTEGER
    # PRIMARY KEY without AUTOINCREMENT, so SQLite gave a new person the highest number + 1:
    # once an erasure deleted the newest person, the next one got their number, and an
    # acknowledgement of the erased person's still waiting to be committed (it carries the
    # number) wrote their delivered hash and system id onto the newcomer. ``n`` is the
    # highest number handed out; Store.subject_numbers numbers new people above it and
    # this table's highest, and moves it in the same transaction. A number given by a
    # statement that does not go through it (a restore's carry-over) is above the table's
    # highest when given, and the trigger records it when it is deleted: numbers are
    # deleted rarely (erasures, moves), where new people are numbered a page at a time.
    """
    CREATE TABLE subject_numbers_given (
        id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL
    );
    INSERT INTO subject_numbers_given(id, n) SELECT 1, COALESCE(MAX(subject_no), 0) FROM subjects;
    CREATE TRIGGER subject_number_deleted AFTER DELETE ON subjects
        WHEN OLD.subject_no > (SELECT n FROM subject_numbers_given WHERE id = 1)
        BEGIN UPDATE subject_numbers_given SET n = OLD.subject_no WHERE id = 1; END;
    """,
    # 21: the audit chain's head and anchor carry a MAC under a key of the store's
    # (connector/audit.py): a plain row, whoever could delete the newest entries set the head
    # back to the last one kept in one UPDATE and the chain verified. NULL until the first
    # write or verify with the key adopts the chain as it stands.
    """
    ALTER TABLE audit_chain ADD COLUMN head_mac TEXT;
    ALTER TABLE audit_chain ADD COLUMN anchor_mac TEXT;
    """,
    # 22: how many times a daemon ended while running a job (a crash, a stop's grace run
    # out), counted by the next start (connector/jobs.py, requeue_cut_off): past a bound
    # the job is failed instead of queued again. Uncounted, a job that crashed the daemon
    # was claimed first at every start, for ever, and nothing after it ran.
    """
    ALTER TABLE jobs ADD COLUMN cut_off INTEGER NOT NULL DEFAULT 0;
    """,
    # 23: which store this is: a random id made with the store (for one of an earlier
    # version, by this step), carried in every backup of it and kept by a restore
    # (connector/lineage.py). Two stores in one folder share its master key, so the key
    # alone let one store's backup be restored over the other: the other's customers,
    # cursors and identity map replaced.
    """
    CREATE TABLE store_identity (
        id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL
    );
    INSERT INTO store_identity(id, store_id) VALUES (1, lower(hex(randomblob(16))));
    """,
    # 24: the records an erasure deleted, each system's id keyed (SystemIds.record_key, never
    # in clear), with the erasure and when its run last reached them. A system reports a
    # deletion klantsync asked for (HubSpot posts contact.privacyDeletion for its own
    # gdpr-delete); the identity rows that named the record go with the erasure, so without
    # these the report opened a second erasure of the person (or was logged as matching
    # nobody). Swept after ``webhook_ids_days``, the time such a report may take to come.
    """
    CREATE TABLE erased_records (
        record_key TEXT PRIMARY KEY, request_id TEXT NOT NULL, erased_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 25: when the latest unsubscribe or subscribe again a system reported for a subject
    # happened there (Mailchimp's ``fired_at``), as the system says it. A delivery the daemon
    # answered with an error comes again later, after the person's newer choice: taken in
    # the order they came, the older unsubscribe undid the newer subscribe. Keyed by the
    # subject's HMAC id, as opt-outs are: an erasure deletes it, a move carries it.
    """
    CREATE TABLE consent_events (
        system TEXT NOT NULL, subject_id TEXT NOT NULL, occurred_at TEXT NOT NULL,
        PRIMARY KEY (system, subject_id)
    ) WITHOUT ROWID;
    """,
    # 26: the audit trail's entries about one person, found by their subject id: an access
    # request lists them (they are data about the processing of the person, Art. 15), and
    # without it each request read the whole trail. Partial: most entries (sync runs and
    # batches, configs, checks) name nobody, and so cost the index nothing.
    """
    CREATE INDEX audit_subject ON audit (subject_id) WHERE subject_id IS NOT NULL;
    """,
    # 27: which of a system's fields a flow's write gave a value, per queued row and per
    # subject last delivered (``sent``, a set of field names kept once in ``field_sets``:
    # people share a handful). Only fields with a value are sent, so without it a phone
    # number removed in the shop stayed in the CRM for good; with it, the next write of
    # that flow empties what it gave before and the source no longer holds. NULL (rows of
    # before, and rows a restore carried over): nothing is emptied, as before. Field names
    # are the mapping's, never personal data.
    """
    CREATE TABLE field_sets (
        id INTEGER PRIMARY KEY, flow TEXT NOT NULL, names TEXT NOT NULL, UNIQUE (flow, names)
    );
    ALTER TABLE outbox ADD COLUMN sent INTEGER;
    ALTER TABLE delivered ADD COLUMN sent INTEGER;
    """,
    # 28: the held rows of the outbox (``payload_hash = 'held'``, connector/state.py HELD),
    # alone. What waits for delivery is counted by ``/metrics`` at every scrape and by
    # `status`: all rows less the held ones. Told apart by their payload hash, which only
    # the table holds, every row was read to count them (a destination down for a few hours
    # leaves a backlog of hundreds of thousands: ~0.25 s on the event loop per 500,000, each
    # 15 s). The rows are counted from the (system, id) index now, and the few held ones
    # from this one.
    """
    CREATE INDEX outbox_held ON outbox (system) WHERE payload_hash = 'held';
    """,
    # 29: dead letters in the order they were last refused. `status` lists the latest few;
    # without it every dead letter was read and sorted to show 20 (40,000 of them: 0.45 s).
    """
    CREATE INDEX dead_letters_refused ON dead_letters (created_at, id);
    """,
    # 30: beside the field set last delivered to a subject (``sent``), that of the last write
    # of another flow before it (``sent_before``): two flows feeding one system (two shops)
    # each write the person in turn, and with only the last set a flow never found what it
    # had given itself once the other had written since. A phone number the customer
    # removed in one shop stayed in the CRM for good, though no source held it any more.
    # NULL (rows of before, one flow only): as before. Field set numbers, never data.
    """
    ALTER TABLE delivered ADD COLUMN sent_before INTEGER;
    """,
    # 31: the field sets of the last writes of the flows before those two (``sent_earlier``,
    # a JSON array of set numbers, oldest first, one per flow): three flows feeding one
    # system (three shops) write the person in turn, and with only the last two sets kept
    # the first flow's was gone by the third's write. A phone number the customer removed
    # in the first shop stayed in the CRM for good. The trigger keeps the list as a write
    # of another flow moves ``sent_before`` on (connector/store_delivered.py): the set it
    # held goes to the end, unless it is the writer's own; the writer's older one, if the
    # list holds it, leaves it (the new write takes its place). Its body runs only then: a
    # first sync inserts, a flow writing after itself leaves ``sent_before`` as it was, and
    # of two flows in turn the set it held is the writer's own, which goes. NULL (rows of
    # before, whose earlier sets are not known; one or two flows): none. Numbers, never data.
    """
    ALTER TABLE delivered ADD COLUMN sent_earlier TEXT;
    CREATE TRIGGER delivered_sent_earlier AFTER UPDATE OF sent_before ON delivered
    WHEN old.sent_before IS NOT NULL AND new.sent_before IS NOT NULL
        AND new.sent_before IS NOT old.sent_before
        AND (old.sent_earlier IS NOT NULL
             OR (SELECT flow FROM field_sets WHERE id = old.sent_before)
                IS NOT (SELECT flow FROM field_sets WHERE id = new.sent))
    BEGIN
        UPDATE delivered SET sent_earlier = NULLIF(json_remove(sent_earlier, (
            SELECT '$[' || e.key || ']' FROM json_each(delivered.sent_earlier) e
            JOIN field_sets f ON f.id = e.value
            WHERE f.flow = (SELECT flow FROM field_sets WHERE id = new.sent))), '[]')
        WHERE system = new.system AND subject_no = new.subject_no AND EXISTS (
            SELECT 1 FROM json_each(delivered.sent_earlier) e JOIN field_sets f ON f.id = e.value
            WHERE f.flow = (SELECT flow FROM field_sets WHERE id = new.sent));
        UPDATE delivered
        SET sent_earlier = json_insert(COALESCE(sent_earlier, '[]'), '$[#]', old.sent_before)
        WHERE system = new.system AND subject_no = new.subject_no
        AND (SELECT flow FROM field_sets WHERE id = old.sent_before)
            IS NOT (SELECT flow FROM field_sets WHERE id = new.sent);
    END;
    """,
]


def statements(script: str) -> list[str]:
    """A migration script's statements, one by one (sqlite3 runs one per call).

    Split at each ``;`` that ends a complete statement, as SQLite reads it: a trigger's body
    holds ``;`` of its own.
    """
    found: list[str] = []
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            statement = pending.strip().removesuffix(";").strip()
            if statement:
                found.append(statement)
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending.strip().removesuffix(";").strip())
    return found
