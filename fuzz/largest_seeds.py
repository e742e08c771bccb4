"""Writes the JSON seeds of the largest message the sink takes (max_value_bytes,
4 MiB) into the folder given: too many elements, the largest valid array, and
the decimal bomb. Generated, not committed: 8 MB of repetition. The first byte
of each selects the data type (0: price), as in fuzz_targets/json.rs."""
import os
import sys

LARGEST = 4 * 1024 * 1024


def array(element: bytes, limit: int) -> bytes:
    out, n = bytearray(b"["), 0
    while len(out) + len(element) + 2 <= limit:
        if n:
            out += b","
        out += element
        n += 1
    return bytes(out + b"]")


def main(folder: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    record = open(os.path.join(here, "seeds/json/crypto_prices-json"), "rb").read()[1:]
    valid = b'{"coinId":"c","symbol":"C","usdPrice":"%s.5","lastUpdated":1763834400000,"source":"s"}'
    bomb = b'{"coinId":"b","symbol":"B","usdPrice":1e131071,"lastUpdated":1763834400000,"source":"t"}'
    seeds = {
        "largest-array-of-too-many": array(record, LARGEST),
        "largest-valid": array(valid % (b"7" * 990), LARGEST),
        "decimal-bomb": array(bomb, 249_000),
    }
    os.makedirs(folder, exist_ok=True)
    for name, value in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"\x00" + value)


if __name__ == "__main__":
    main(sys.argv[1])
