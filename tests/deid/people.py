"""Generated people, places and institutions for the free-text tests (Faker, several locales).

Names come with particles ("de Roo"), hyphens and diacritics; every run uses the same seed, so a
failure names the same person again. None of them is a real patient: Faker makes them up.
"""

from __future__ import annotations

from dataclasses import dataclass

from faker import Faker

LOCALES = ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "pl_PL", "it_IT", "pt_BR", "sv_SE", "tr_TR")
PARTICLES = frozenset({"van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "dos", "das", "le", "la", "ter", "ten"})


@dataclass(frozen=True)
class Person:
    given: str
    family: str

    @property
    def full(self) -> str:
        return f"{self.given} {self.family}"

    def tokens(self) -> list[str]:
        """The words that identify the person (particles alone do not)."""
        words = self.full.replace("-", " ").split()
        return [w for w in words if w.lower() not in PARTICLES and len(w) > 1]


def people(count: int, seed: int) -> list[Person]:
    """`count` people from many locales; every third has a hyphenated given name, every fourth a particle."""
    fake = Faker(list(LOCALES))
    fake.seed_instance(seed)
    found = []
    for number in range(count):
        given, family = fake.first_name(), fake.last_name()
        if number % 3 == 1:
            given = f"{given}-{fake.first_name()}"
        if number % 4 == 2 and " " not in family:
            family = f"{('van der', 'de', 'da', 'von')[number % 4 // 2 + number % 2]} {family}"
        found.append(Person(given, family))
    return found


def institution(seed: int) -> str:
    """An institution name of three generated words and "Hospital"."""
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    return f"{fake.last_name()} {fake.last_name()} {fake.last_name()} Hospital"


def phone(seed: int) -> str:
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    return fake.phone_number()


def absent(tokens: list[str], text: str) -> bool:
    """No token survives as a word of `text` (any case)."""
    words = {w.strip(".,;:()[]").lower() for w in text.replace("-", " ").split()}
    return not any(t.lower() in words for t in tokens)
