"""Flows that meet: loops between systems and systems written from two sources."""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.flowgraph import loops, meeting_warnings, two_sources


@dataclass
class Flow:
    name: str
    source: str
    destinations: list[str] = field(default_factory=list)


def test_flows_in_one_direction_make_no_loop_and_no_second_source() -> None:
    flows = [Flow("shop-to-crm", "shop", ["crm", "news"]), Flow("crm-to-deals", "crm", ["deals"])]
    assert loops(flows) == [] and two_sources(flows) == []
    assert meeting_warnings(flows) == []


def test_two_flows_writing_to_each_other_s_source_are_a_loop() -> None:
    flows = [Flow("shop-to-crm", "shop", ["crm"]), Flow("crm-to-shop", "crm", ["shop"])]
    assert loops(flows) == [(["crm", "shop"], ["crm-to-shop", "shop-to-crm"])]
    (warning,) = meeting_warnings(flows)
    assert "flows crm-to-shop and shop-to-crm form a loop (crm and shop" in warning


def test_a_loop_through_three_systems_is_one_loop_and_leaves_the_flow_into_it_out() -> None:
    flows = [
        Flow("shop-to-crm", "shop", ["crm"]),
        Flow("crm-to-deals", "crm", ["deals"]),
        Flow("deals-to-news", "deals", ["news"]),
        Flow("news-to-crm", "news", ["crm"]),
    ]
    assert loops(flows) == [
        (["crm", "deals", "news"], ["crm-to-deals", "deals-to-news", "news-to-crm"])
    ]


def test_a_system_written_from_two_sources_is_named_with_each_flow_and_its_source() -> None:
    flows = [
        Flow("shop-to-crm", "shop", ["crm"]),
        Flow("deals-to-crm", "deals", ["crm"]),
        Flow("crm-to-deals", "crm", ["deals"]),
    ]
    assert two_sources(flows) == [("crm", [("deals-to-crm", "deals"), ("shop-to-crm", "shop")])]
    loop, second = meeting_warnings(flows)
    assert "crm-to-deals and deals-to-crm form a loop" in loop
    assert second.startswith(
        "crm is written by flows deals-to-crm (from deals) and shop-to-crm (from shop)"
    )


def test_two_flows_of_one_source_to_one_system_are_not_two_sources() -> None:
    flows = [Flow("daily", "shop", ["crm"]), Flow("hourly", "shop", ["crm", "news"])]
    assert two_sources(flows) == []
