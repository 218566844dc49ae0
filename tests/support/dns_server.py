"""A real DNS server on loopback that answers TXT queries from a table (DKIM keys of tests).

dnspython builds and parses the packets; the server speaks plain DNS over UDP, so the gateway's
resolver (`dkim_resolver = "127.0.0.1:PORT"`) queries it exactly as it would a real one.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class TxtServer:
    records: dict[str, bytes]  # "s1._domainkey.example.com." -> the TXT value
    host: str = "127.0.0.1"
    port: int = 0
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    queries: list[str] = field(default_factory=list)

    def start(self) -> TxtServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:
                return  # closed by stop()
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().lower()
            self.queries.append(name)
            value = self.records.get(name)
            if value is not None and question.rdtype == dns.rdatatype.TXT:
                chunks = " ".join(
                    '"' + value[i : i + 200].decode() + '"' for i in range(0, len(value), 200)
                )
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, "TXT", chunks)
                )
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._sock.sendto(response.to_wire(), peer)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
