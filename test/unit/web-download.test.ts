/** [import_filtering_opts] rules of the web-download import (src/image/web-download.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkImportUri, webDownloadEnabled, type ImportFilter } from '../../src/image/web-download.ts';
import { PumiceError } from '../../src/errors.ts';

const glanceDefaults: ImportFilter = {
  allowedSchemes: ['http', 'https'], disallowedSchemes: [], allowedHosts: ['images.example.org', '10.0.0.5', '::1'], disallowedHosts: [],
  allowedPorts: [80, 443], disallowedPorts: [],
};

function refusedWith(uri: string | undefined, filter: ImportFilter | null, message: RegExp): void {
  assert.throws(() => checkImportUri(uri, filter), (error: unknown) => {
    assert.ok(error instanceof PumiceError, String(error));
    assert.equal(error.status, 400);
    assert.match(error.message, message);
    return true;
  }, uri);
}

test('without allowed_hosts web-download is off, and says which option turns it on', () => {
  assert.equal(webDownloadEnabled(null), false);
  assert.equal(webDownloadEnabled({ ...glanceDefaults, allowedHosts: [] }), false);
  refusedWith('https://images.example.org/a.raw', { ...glanceDefaults, allowedHosts: [] }, /not enabled: .*\[import_filtering_opts\] allowed_hosts/);
});

test('allowed URLs pass: listed host (name, address, IPv6), default port of the scheme', () => {
  assert.equal(checkImportUri('https://images.example.org/a.raw', glanceDefaults).host, 'images.example.org');
  assert.equal(checkImportUri('http://IMAGES.example.org/a.raw', glanceDefaults).hostname, 'images.example.org');
  assert.equal(checkImportUri('http://10.0.0.5:80/a', glanceDefaults).hostname, '10.0.0.5');
  assert.equal(checkImportUri('http://[::1]/a', glanceDefaults).hostname, '[::1]');
});

test('each rule refuses with its reason', () => {
  refusedWith(undefined, glanceDefaults, /needs the image's address/);
  refusedWith('images.example.org/a.raw', glanceDefaults, /is not a URL/);
  refusedWith('file:///etc/passwd', glanceDefaults, /scheme 'file' is not supported/);
  refusedWith('https://evil.example.org/a', glanceDefaults, /host 'evil.example.org' is not in \[import_filtering_opts\] allowed_hosts/);
  refusedWith('https://images.example.org:8443/a', glanceDefaults, /port 8443 is not allowed/);
  refusedWith('https://u:p@images.example.org/a', glanceDefaults, /credentials in the URL/);
  refusedWith('http://images.example.org/a', { ...glanceDefaults, allowedSchemes: ['https'] }, /scheme 'http' is not allowed/);
  refusedWith('https://images.example.org/a', { ...glanceDefaults, disallowedHosts: ['images.example.org'] }, /host 'images.example.org' is not in/);
  refusedWith('https://images.example.org/a', { ...glanceDefaults, allowedPorts: [], disallowedPorts: [443] }, /port 443 is not allowed/);
  assert.ok(checkImportUri('https://images.example.org:8443/a', { ...glanceDefaults, allowedPorts: [] }));
});
