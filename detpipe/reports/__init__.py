"""What a person reads: the map stage's reports, the split check, the overfitting verdict, the index page."""


def counted(n: int, noun: str) -> str:
    """`n` and the noun, singular for one ("1 object", "0 objects", "2 objects")."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
