"""Start a throwaway PostgreSQL server on loopback for the tests, and stop it afterwards."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


def _bin(name):
    found = sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}')) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    return found[-1] if found else None


def available():
    return _bin('initdb') is not None and _bin('pg_ctl') is not None


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start on 127.0.0.1 (as the postgres user when running as root); `url` connects to database
    `fedland`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='fedland-pg-')
        self.data, self.sock, self.port = os.path.join(self.dir, 'data'), os.path.join(self.dir, 'sock'), _free_port()
        os.makedirs(self.sock)
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, 'postgres')
            shutil.chown(self.sock, 'postgres')
            self.as_user = ['runuser', '-u', 'postgres', '--']
        self._run([_bin('initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres', '--no-sync'])
        self._run([_bin('pg_ctl'), '-D', self.data, '-l', os.path.join(self.dir, 'log'), '-w', '-t', '60', 'start',
                   '-o', f'-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c '
                         f'max_connections=50'])
        self.url_admin = f'postgresql://postgres@127.0.0.1:{self.port}/postgres'
        import psycopg
        for _ in range(50):
            try:
                with psycopg.connect(self.url_admin, autocommit=True) as c:
                    c.execute('CREATE DATABASE fedland')
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        self.url = f'postgresql://postgres@127.0.0.1:{self.port}/fedland'

    def _run(self, cmd):
        subprocess.run(self.as_user + cmd, check=True, capture_output=True, timeout=120)

    def stop(self):
        try:
            self._run([_bin('pg_ctl'), '-D', self.data, '-m', 'immediate', '-w', 'stop'])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
