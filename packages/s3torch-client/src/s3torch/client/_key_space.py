"""Where to split a key range: keys as numbers, so a range can be cut in parts.

S3 lists keys in UTF-8 byte order, which is the order of their code points, so
a Python ``str`` comparison orders keys as S3 does. To cut the range between
two keys into parts, each key is read as a number in a mixed radix: the digit
at each position is the character's rank among the characters seen at that
position in the keys listed so far (digit 0 meaning "the key ends here"); a
digit seen at a position stands for all ten there, so ``sample-00000999``
already spans ``sample-99999999`` (and for all sixteen once a position has
held both digits and ``a``-``f``: hashed keys). Keys made of a few characters per position
(digits, hex, a fixed name and ``/``) then spread evenly over the numbers,
where code points would leave almost all of them empty.

Nothing here decides what is listed: a split point only chooses which walker
lists which keys. Any point strictly between two bounds keeps every key in
exactly one range, so a poor guess (skewed keys, characters never seen) costs
balance, never correctness.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["KeySpace"]

MAX_DIGITS = 256
"""Characters of a key that count for splitting; beyond them, keys are equal."""

_DIGITS = "0123456789"
_HEX_LETTERS = "abcdef"


class KeySpace:
    """The characters seen at each position of the keys so far, and the numbers they give keys."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._seen: list[set[str]] = [{char} for char in prefix[:MAX_DIGITS]]
        self._every: set[str] = set(prefix)
        self._hex = False
        self._alphabets: list[list[str]] = []
        self._digits = 0
        self._rebuild(len(prefix) + 2)

    def _rebuild(self, digits: int) -> None:
        self._digits = min(max(digits, 8), MAX_DIGITS)
        while len(self._seen) < self._digits:
            self._seen.append(set())
        fallback = sorted(self._every) or ["0"]
        self._alphabets = [
            sorted(chars) if chars else fallback for chars in self._seen[: self._digits]
        ]

    def learn(self, keys: list[str]) -> None:
        """Add the characters and length of ``keys`` to what splitting knows."""
        changed = False
        longest = self._digits
        for key in keys:
            longest = max(longest, len(key) + 2)
            for position, char in enumerate(key[:MAX_DIGITS]):
                if position >= len(self._seen):
                    self._seen.append(set())
                chars = self._seen[position]
                if char in chars:
                    continue
                chars.update(_DIGITS if char in _DIGITS else char)
                self._every.add(char)
                changed = True
                if char in _HEX_LETTERS and "0" in chars:
                    self._hex = True
        if changed and self._hex:  # hexadecimal: where a digit was seen, any hex digit may be
            for chars in self._seen:
                if "0" in chars:
                    chars.update(_HEX_LETTERS)
        if changed or min(longest, MAX_DIGITS) != self._digits:
            self._rebuild(longest)

    def _digit(self, position: int, char: str) -> int:
        # A character never seen there sits with its nearest lower neighbour
        # (>= 1: 0 means "the key ends").
        alphabet = self._alphabets[position]
        index = bisect_left(alphabet, char)
        if index < len(alphabet) and alphabet[index] == char:
            return index + 1
        return max(1, index)

    def value(self, key: str | None) -> int:
        """``key`` as a number; None is where the prefix's keys end."""
        if key is None:
            below = 1
            for alphabet in self._alphabets[len(self.prefix) :]:
                below *= len(alphabet) + 1
            return self.value(self.prefix) + below
        number = 0
        for position, alphabet in enumerate(self._alphabets):
            digit = self._digit(position, key[position]) if position < len(key) else 0
            number = number * (len(alphabet) + 1) + digit
        return number

    def key(self, number: int) -> str:
        """The smallest key whose number is at least ``number`` (nearly: to the first 0 digit).

        A 0 digit ("the key ends") followed by others is no key: it rounds up
        to the first character there.
        """
        digits = []
        for alphabet in reversed(self._alphabets):
            number, digit = divmod(number, len(alphabet) + 1)
            digits.append(digit)
        digits.reverse()
        chars = []
        for position, digit in enumerate(digits):
            if digit == 0:
                if any(digits[position + 1 :]):
                    chars.append(self._alphabets[position][0])
                break
            chars.append(self._alphabets[position][digit - 1])
        return "".join(chars)

    def points(
        self, low: str | None, high: str | None, numbers: list[int], slack: int = 0
    ) -> list[str]:
        """Keys strictly between ``low`` and ``high``, in order, one near each number.

        ``low`` None is the start of the prefix, ``high`` None its end. Each key
        is the shortest start of the number's key that is above ``low`` and
        within ``slack`` below the number (short points read well in logs);
        numbers outside the range or whose key would repeat the one before are
        dropped.
        """
        floor = low if low is not None else self.prefix
        found: list[str] = []
        for number in numbers:
            full = self.key(number)
            point = None
            for length in range(len(self.prefix) + 1, len(full) + 1):
                candidate = full[:length]
                if candidate > floor and self.value(candidate) >= number - slack:
                    point = candidate
                    break
            if point is None or not point.startswith(self.prefix):
                continue
            if (low is not None and point <= low) or (high is not None and point >= high):
                continue
            if found and point <= found[-1]:
                continue
            found.append(point)
        return found
