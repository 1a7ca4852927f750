"""The online store on Redis: the production backend, one key space per region, writes by compare-and-set."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import polars as pl

from meridian.conflicts import format_hlc
from meridian.online_store import CLOCK, OnlineRow, OnlineStoreUnavailable, WriteResult, chunks, dump_values

# KEYS[1] = entity key, KEYS[2] = view index; ARGV = event_time_us, version, payload,
# hlc (zero-padded: Lua numbers are doubles), origin. Applies only if (t, h, o) is greater.
_CAS = """
local cur = redis.call('HMGET', KEYS[1], 't', 'h', 'o')
if cur[1] then
  local t, ct = tonumber(ARGV[1]), tonumber(cur[1])
  if t < ct then return 0 end
  if t == ct then
    local ch, co = cur[2] or '', cur[3] or ''
    if ARGV[4] < ch or (ARGV[4] == ch and ARGV[5] <= co) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'v', ARGV[2], 'p', ARGV[3], 'h', ARGV[4], 'o', ARGV[5])
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"""


def redact(url: str) -> str:
    """The URL without its password, for logs, metadata and error messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class RedisOnlineStore:
    """One hash per (region, view, entity): `meridian:<region>:<view>:<entity>` → t, v, p.

    A set per view indexes its keys (`count`); in production each region has its own
    Redis, and the key prefix keeps regions apart even on a shared test server.
    """

    def __init__(self, url: str, region: str, timeout_seconds: float = 2.0, origin: str = ""):
        import redis

        self.region = region
        self.origin = origin or region
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._url = redact(url)  # what messages name: never the password
        self._cas = self._client.register_script(_CAS)

    def _key(self, view: str, entity: str) -> str:
        return f"meridian:{self.region}:{view}:{entity}"

    def _index(self, view: str) -> str:
        return f"meridian:{self.region}:{view}:__keys__"

    def _guard(self, fn):
        import redis

        try:
            return fn()
        except redis.exceptions.ConnectionError as error:
            raise OnlineStoreUnavailable(f"online store {self._url} is unreachable: {error}") from error
        except redis.exceptions.TimeoutError as error:
            raise OnlineStoreUnavailable(f"online store {self._url} timed out: {error}") from error
        except redis.exceptions.RedisError as error:  # e.g. a key of the wrong type: not a 500
            raise OnlineStoreUnavailable(f"online store {self._url} failed: {error}") from error

    def write(self, rows: Iterable[OnlineRow]) -> WriteResult:
        applied = total = 0
        for chunk in chunks(rows, 5_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                now = CLOCK.now()
                for r in chunk:
                    self._cas(
                        keys=[self._key(r.view, r.entity), self._index(r.view)],
                        args=[
                            r.event_time_us,
                            r.version,
                            dump_values(r.values),
                            format_hlc(r.hlc or now),
                            r.origin or self.origin,
                        ],
                        client=pipe,
                    )
                return pipe.execute()

            results = self._guard(run)
            applied += sum(int(x) for x in results)
            total += len(chunk)
        return WriteResult(applied=applied, stale=total - applied)

    def write_frame(self, view: str, version: str, frame: pl.DataFrame) -> WriteResult:
        """Bulk write of an encoded frame: pipelines of the same compare-and-set script."""
        applied = 0
        index = self._index(view)
        prefix = f"meridian:{self.region}:{view}:"
        for chunk in frame.iter_slices(5_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                stamp = format_hlc(CLOCK.now())
                for e, t, p in chunk.select("entity", "event_time_us", "payload").iter_rows():
                    self._cas(keys=[prefix + e, index], args=[t, version, p, stamp, self.origin], client=pipe)
                return pipe.execute()

            applied += sum(int(x) for x in self._guard(run))
        return WriteResult(applied=applied, stale=frame.height - applied)

    def read(self, view: str, entity: str) -> OnlineRow | None:
        found = self._guard(lambda: self._client.hmget(self._key(view, entity), "t", "v", "p", "h", "o"))
        return _decoded(view, entity, *found)

    def read_keys(self, keys: Sequence[tuple[str, str]]) -> list[OnlineRow | None]:
        """Each (view, entity)'s row or None, in the order asked: one pipelined round trip."""

        def run():
            pipe = self._client.pipeline(transaction=False)
            for view, entity in keys:
                pipe.hmget(self._key(view, entity), "t", "v", "p", "h", "o")
            return pipe.execute()

        found = self._guard(run) if keys else []
        return [_decoded(view, entity, *fields) for (view, entity), fields in zip(keys, found, strict=True)]

    def read_many(self, view: str, entities: Sequence[str], *, stamps: bool = False) -> dict[str, OnlineRow]:
        """The entities' rows; `stamps` also reads each row's write stamp (HLC) and origin."""
        fields = ("t", "v", "p", "h", "o") if stamps else ("t", "v", "p")

        def run():
            pipe = self._client.pipeline(transaction=False)
            for entity in entities:
                pipe.hmget(self._key(view, entity), *fields)
            return pipe.execute()

        out = {}
        for entity, found in zip(entities, self._guard(run), strict=True):
            row = _decoded(view, entity, *found)
            if row is not None:
                out[entity] = row
        return out

    def count(self, view: str) -> int:
        return int(self._guard(lambda: self._client.scard(self._index(view))))

    def iter_rows(self, view: str) -> Iterable[OnlineRow]:
        prefix = len(f"meridian:{self.region}:{view}:")
        keys = sorted(self._guard(lambda: self._client.smembers(self._index(view))))
        for chunk in chunks(keys, 1_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, "t", "v", "p", "h", "o")
                return pipe.execute()

            for key, (t, v, p, h, o) in zip(chunk, self._guard(run), strict=True):
                if t is not None:
                    yield OnlineRow(
                        view,
                        key.decode()[prefix:],
                        int(t),
                        v.decode(),
                        orjson.loads(p),
                        int(h) if h else 0,
                        o.decode() if o else "",
                    )

    def ping(self) -> None:
        self._guard(self._client.ping)

    def probe(self) -> None:
        """A real lookup, not only PING: the key space answers reads."""
        self._guard(lambda: self._client.srandmember(self._index("customer_spend")))

    def drop_future(self, view: str, after_us: int) -> int:
        """Delete the view's rows stamped after `after_us` (see SqliteOnlineStore.drop_future)."""
        dropped = 0
        for row in list(self.iter_rows(view)):
            if row.event_time_us > after_us:
                key = self._key(view, row.entity)

                def run(key=key):
                    pipe = self._client.pipeline(transaction=True)
                    pipe.delete(key)
                    pipe.srem(self._index(view), key)
                    return pipe.execute()

                self._guard(run)
                dropped += 1
        return dropped

    def close(self) -> None:
        self._client.close()


def _decoded(view: str, entity: str, t, v, p, h=None, o=None) -> OnlineRow | None:
    """A row from its hash fields (time, version, payload[, HLC, origin]); None when absent."""
    if t is None:
        return None
    return OnlineRow(
        view, entity, int(t), v.decode(), orjson.loads(p), int(h) if h else 0, o.decode() if o else ""
    )
