from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Network, IPv6Network

import pytest

from uploadpools.kit.netguard import (
    ALLOWLIST_SETTING,
    DestinationRefused,
    parse_networks,
    resolve_and_check,
)


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answer getaddrinfo from a dict so tests never touch real DNS."""
    answers: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result = []
        for address in answers[host]:
            if ":" in address:
                result.append((socket.AF_INET6, type, 6, "", (address, port, 0, 0)))
            else:
                result.append((socket.AF_INET, type, 6, "", (address, port)))
        return result

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


class TestRefusedAddresses:
    @pytest.mark.parametrize(
        ("url", "reason", "address"),
        [
            ("http://127.0.0.1/video.mp4", "loopback", "127.0.0.1"),
            ("http://[::1]:8080/", "loopback", "::1"),
            ("https://10.20.30.40/a", "private", "10.20.30.40"),
            ("http://192.168.1.1/", "private", "192.168.1.1"),
            ("http://169.254.169.254/latest/meta-data/", "link-local", "169.254.169.254"),
            ("http://0.0.0.0/", "unspecified", "0.0.0.0"),
            ("http://[::ffff:127.0.0.1]/", "IPv4-mapped loopback", "::ffff:127.0.0.1"),
            ("http://[::ffff:10.0.0.1]/", "IPv4-mapped private", "::ffff:10.0.0.1"),
            ("http://[2002:a9fe:a9fe::]/", "6to4 link-local", "2002:a9fe:a9fe::"),
            ("http://100.64.0.1/", "shared", "100.64.0.1"),
            ("http://224.0.0.251/", "multicast", "224.0.0.251"),
            ("http://[fd00::1]/", "private", "fd00::1"),
            ("http://[fe80::1]/", "link-local", "fe80::1"),
        ],
    )
    async def test_literal_addresses_are_refused(self, url: str, reason: str, address: str) -> None:
        with pytest.raises(DestinationRefused) as excinfo:
            await resolve_and_check(url, [])

        message = str(excinfo.value)
        assert f"{reason}" in message
        assert address in message
        assert ALLOWLIST_SETTING in message

    async def test_localhost_is_refused_with_a_helpful_message(self) -> None:
        with pytest.raises(DestinationRefused) as excinfo:
            await resolve_and_check("http://localhost:8000/x", [])

        message = str(excinfo.value)
        assert "'localhost' resolves to loopback address" in message
        assert "which is not allowed; add it to UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED" in message

    async def test_one_private_answer_among_public_ones_is_enough(
        self, fake_dns: dict[str, list[str]]
    ) -> None:
        fake_dns["mixed.example"] = ["93.184.216.34", "10.0.0.5"]

        with pytest.raises(DestinationRefused, match=r"'mixed.example' resolves to private"):
            await resolve_and_check("https://mixed.example/v.mp4", [])


class TestAllowedDestinations:
    async def test_public_address_is_returned(self, fake_dns: dict[str, list[str]]) -> None:
        fake_dns["cdn.example"] = ["93.184.216.34", "2606:2800:220:1::1"]

        assert await resolve_and_check("https://cdn.example/v.mp4", []) == [
            "93.184.216.34",
            "2606:2800:220:1::1",
        ]

    async def test_allowlisted_cidr_permits_private_address(self) -> None:
        allowed = parse_networks("127.0.0.0/8")

        assert await resolve_and_check("http://127.0.0.1:9/", allowed) == ["127.0.0.1"]

    async def test_allowlisted_bare_ip_permits_only_that_host(
        self, fake_dns: dict[str, list[str]]
    ) -> None:
        fake_dns["nas.lan"] = ["192.168.1.20"]
        fake_dns["printer.lan"] = ["192.168.1.21"]
        allowed = parse_networks("192.168.1.20")

        assert await resolve_and_check("http://nas.lan/clip.mp4", allowed) == ["192.168.1.20"]
        with pytest.raises(DestinationRefused):
            await resolve_and_check("http://printer.lan/", allowed)

    async def test_allowlisted_ipv4_covers_its_mapped_ipv6_form(self) -> None:
        allowed = parse_networks(["127.0.0.0/8"])

        assert await resolve_and_check("http://[::ffff:127.0.0.1]/", allowed) == [
            "::ffff:127.0.0.1"
        ]


class TestUrlValidation:
    @pytest.mark.parametrize(
        "url",
        ["ftp://example.com/video.mp4", "file:///etc/passwd", "gopher://x/", "example.com/v.mp4"],
    )
    async def test_non_http_schemes_are_refused(self, url: str) -> None:
        with pytest.raises(DestinationRefused, match="only http:// and https://"):
            await resolve_and_check(url, [])

    async def test_url_without_host_is_refused(self) -> None:
        with pytest.raises(DestinationRefused, match="no host"):
            await resolve_and_check("http:///video.mp4", [])

    async def test_unresolvable_host_is_refused(self, fake_dns: dict[str, list[str]]) -> None:
        with pytest.raises(DestinationRefused, match=r"could not resolve host 'nowhere\.example'"):
            await resolve_and_check("https://nowhere.example/", [])

    async def test_bad_port_is_refused(self) -> None:
        with pytest.raises(DestinationRefused, match="invalid URL"):
            await resolve_and_check("http://example.com:99999/", [])

    async def test_refusals_do_not_repeat_credentials_or_the_query(self) -> None:
        for url in ("http://u:s3cret@example.com:99999/?sig=abc", "http://u:s3cret@/?sig=abc"):
            with pytest.raises(DestinationRefused) as excinfo:
                await resolve_and_check(url, [])
            assert "s3cret" not in str(excinfo.value)
            assert "sig=abc" not in str(excinfo.value)


class TestParseNetworks:
    def test_comma_separated_cidrs_and_bare_ips(self) -> None:
        assert parse_networks(" 10.0.0.0/8, 192.168.1.20 ,fd00::/8,") == (
            IPv4Network("10.0.0.0/8"),
            IPv4Network("192.168.1.20/32"),
            IPv6Network("fd00::/8"),
        )

    def test_empty_value_gives_no_networks(self) -> None:
        assert parse_networks("") == ()
        assert parse_networks([]) == ()

    def test_host_bits_are_ignored(self) -> None:
        assert parse_networks(["10.1.2.3/8"]) == (IPv4Network("10.0.0.0/8"),)

    def test_invalid_item_is_named_in_error(self) -> None:
        with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
            parse_networks("127.0.0.0/8, 10.0.0.0/33")
