import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withoutDirectories } from '../../src/redact.ts';

test('directories are cut from the paths a message names; file names stay', () => {
  const dirs = ['/var/lib/pumice', '/var/lib/pumice/images/', '/srv/volumes', null, undefined, 'relative/dir'];
  assert.equal(
    withoutDirectories("qemu-img: Could not open '/var/lib/pumice/images/1234.ab.tmp': Unsupported qcow2 version 7", dirs, '<x>'),
    "qemu-img: Could not open '1234.ab.tmp': Unsupported qcow2 version 7",
  );
  assert.equal(withoutDirectories('ENOSPC: no space left on device, open /srv/volumes/volume-1', dirs, '<x>'), 'ENOSPC: no space left on device, open volume-1');
  assert.equal(withoutDirectories('cannot write /var/lib/pumice/conversion/a/b.raw', dirs, '<x>'), 'cannot write conversion/a/b.raw');
  assert.equal(withoutDirectories('directory /srv/volumes is full', dirs, '<x>'), 'directory <x> is full');
  // A longer name that starts the same is another directory, left alone; so are relative paths and URL paths.
  assert.equal(withoutDirectories('/srv/volumes-old/x and relative/dir/y and PUT /v2/images/1/stage', dirs, '<x>'), '/srv/volumes-old/x and relative/dir/y and PUT /v2/images/1/stage');
});
