"""Money rules: amounts are integers in a currency's minor unit, never floats."""

from __future__ import annotations

MIN_AMOUNT = 1
MAX_AMOUNT = 99_999_999

_ZERO_DECIMAL = "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf"
_THREE_DECIMAL = "bhd jod kwd omr tnd"
_TWO_DECIMAL = (
    "aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bmd bnd bob brl bsd bwp byn bzd "
    "cad cdf chf cny cop crc cve czk dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gtq gyd "
    "hkd hnl htg huf idr ils inr isk jmd kes kgs khr kyd kzt lak lbp lkr lrd lsl mad mdl mkd "
    "mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln qar "
    "ron rsd rub sar sbd scr sek sgd shp sle sos srd std szl thb tjs top try ttd twd tzs uah "
    "usd uyu uzs wst xcd yer zar zmw"
)

#: ISO 4217 code (lowercase) -> number of digits of its minor unit.
CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 0 for code in _ZERO_DECIMAL.split()},
    **{code: 2 for code in _TWO_DECIMAL.split()},
    **{code: 3 for code in _THREE_DECIMAL.split()},
}


def is_supported_currency(code: str) -> bool:
    """True when `code` is a lowercase ISO 4217 code the engine bills in."""
    return code in CURRENCY_EXPONENTS


def is_valid_amount(amount: int, *, allow_zero: bool = False) -> bool:
    """True when `amount` is within the contract's range (1..99,999,999; 0 where allowed)."""
    low = 0 if allow_zero else MIN_AMOUNT
    return low <= amount <= MAX_AMOUNT


def format_amount(amount: int, currency: str) -> str:
    """Human form for mail and logs, e.g. 1999 usd -> '19.99 USD', 500 jpy -> '500 JPY'."""
    exponent = CURRENCY_EXPONENTS[currency]
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**exponent)
    text = f"{whole}.{minor:0{exponent}d}" if exponent else str(whole)
    return f"{sign}{text} {currency.upper()}"
