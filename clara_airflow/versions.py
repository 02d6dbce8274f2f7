"""What the installed Airflow and its libraries can do together, read from the distributions' metadata
only: no Airflow import, so the loader may ask on every parse and ``clara-airflow validate`` before
Airflow starts.
"""

from __future__ import annotations

__all__ = ["crypto_problem"]


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def crypto_problem() -> str | None:
    """Why this Airflow cannot encrypt with the installed ``cryptography``, or None when it can.

    Why: Airflow 3.1's ``get_fernet`` sets ``is_encrypted`` on cryptography's ``MultiFernet``; from
    cryptography 51 that object takes no new attributes, so every Variable or Connection write fails with
    ``AttributeError: ... 'is_encrypted'``. Airflow 3.2 wraps the object instead (``_RealFernet``). Read
    from the installed distributions' versions only (no Airflow import: cheap enough for every parse).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        airflow, cryptography = version("apache-airflow-core"), version("cryptography")
    except PackageNotFoundError:
        return None
    if _release(airflow)[:2] == (3, 1) and _release(cryptography)[:1] >= (51,):
        return (f"Airflow {airflow} cannot use cryptography {cryptography}: every Variable and Connection write "
                "fails with AttributeError 'is_encrypted' (clara-airflow's service records and leases are "
                "Variables); install 'cryptography<51' (README, 'Supported Airflow versions'), or Airflow 3.2+")
    return None
