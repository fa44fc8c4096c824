"""Where a viewer is, coarsely, from their IP address, with an offline database that ships in a package.

geoip2fast ships a country database inside its wheel (no download at run time). An optional MaxMind
GeoLite2/GeoIP2 City file (AULA_GEOIP_CITY_DB) adds the first subdivision (state or region) for adults.
Minors get the country only, never a region (docs/compliance.md). The IP address itself is never kept.
"""

from __future__ import annotations

import functools
import ipaddress
import logging

from django.conf import settings

logger = logging.getLogger("aula.analytics.geo")


@functools.cache
def _country_db():
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(verbose=False)


@functools.cache
def _city_db():
    path = getattr(settings, "AULA_GEOIP_CITY_DB", "")
    if not path:
        return None
    try:
        import geoip2.database  # optional: only with a configured MaxMind file
    except ImportError:
        logger.warning("AULA_GEOIP_CITY_DB is set but the geoip2 package is not installed; regions are off")
        return None
    return geoip2.database.Reader(path)


def locate(ip: str | None, *, minor: bool = False) -> tuple[str, str]:
    """(ISO country code, region code) for an IP; ("", "") when private, unknown or unparseable."""
    if not ip:
        return "", ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "", ""
    if addr.is_private or addr.is_loopback or addr.is_reserved or addr.is_link_local:
        return "", ""
    try:
        country = _country_db().lookup(str(addr)).country_code or ""
    except Exception:  # the lookup is best-effort enrichment, never a reason to lose the event
        country = ""
    if country.startswith("--"):  # geoip2fast's "not found" / private markers
        country = ""
    region = ""
    if not minor and (db := _city_db()) is not None:
        try:
            sub = db.city(str(addr)).subdivisions.most_specific.iso_code
            region = f"{country}-{sub}" if sub else ""
        except Exception:
            region = ""
    return country, region
