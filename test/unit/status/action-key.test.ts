import { describe, expect, it } from '@jest/globals';
import {
  formatActionKey,
  matchesActionKey,
  parseActionKey,
  type ActionKeySubject,
} from '../../../services/status/action-key';

const resize: ActionKeySubject = {
  client: undefined,
  pipeline: 'images',
  decorators: [],
  stage: 'resize',
};
const publish: ActionKeySubject = {
  client: undefined,
  pipeline: 'images',
  decorators: ['PUBLISH'],
  stage: 'notify',
};
const fromAlice: ActionKeySubject = {
  client: 'alice',
  pipeline: 'images',
  decorators: ['ASYNC'],
  stage: 'approve',
};

function matches(key: string, subject: ActionKeySubject): boolean {
  return matchesActionKey(parseActionKey(key), subject);
}

describe('action keys', () => {
  it.each([
    ['*', resize, true],
    ['', publish, true],
    ['*?images@*?resize', resize, true],
    ['*?images?resize', resize, true], // no @: any decorator
    ['??resize', resize, true], // empty parts are wildcards, as in DigitalPy's ??done
    ['*?images@NONE?resize', resize, true],
    ['*?images@none?resize', resize, true], // decorators are case-insensitive
    ['*?images@PUBLISH?resize', resize, false],
    ['*?images@PUBLISH?*', publish, true],
    ['*?images@ASYNC?*', publish, false],
    ['*?ima*@*?*', resize, true],
    ['*?img*@*?*', resize, false],
    ['*?*?re*ze', resize, true],
    ['*?*?re*zed', resize, false],
    ['*?Images?resize', resize, false], // names are case-sensitive
    ['alice?images?*', resize, false], // an unknown client never matches a named one
    ['a*?images?*', resize, false],
    ['alice?images@ASYNC?approve', fromAlice, true],
    ['bob?images?approve', fromAlice, false],
    ['?images.v2?resize', { ...resize, pipeline: 'images.v2' }, true], // "." is literal
    ['?images.v2?resize', { ...resize, pipeline: 'imagesXv2' }, false],
  ] as const)('%s against %j → %s', (key, subject, expected) => {
    expect(matches(key, subject)).toBe(expected);
  });

  it('binds ? before @: a?b@c?d is client a, pipeline b, decorator c, stage d', () => {
    const p = parseActionKey('a?b@PUBLISH?d');
    expect(p.client.test('a')).toBe(true);
    expect(p.pipeline.test('b')).toBe(true);
    expect(p.pipeline.test('b@PUBLISH')).toBe(false);
    expect(p.decorator.test('PUBLISH')).toBe(true);
    expect(p.stage.test('d')).toBe(true);
  });

  it.each([
    ['images', 'form'],
    ['a?b', 'form'],
    ['a?b?c?d', 'form'],
    ['a@x?b?c', '"@"'],
    ['a?b?c@x', '"@"'],
    ['a?b@X?c', 'decorator'],
    ['a?b@P@Q?c', 'more than one'],
  ])('refuses %s naming filter.action_key', (key, message) => {
    expect(() => parseActionKey(key)).toThrow(
      expect.objectContaining({ field: 'filter.action_key' }),
    );
    expect(() => parseActionKey(key)).toThrow(new RegExp(message));
  });

  it('formats an event key with * for an unknown client', () => {
    expect(formatActionKey(publish)).toBe('*?images@PUBLISH?notify');
    expect(formatActionKey(resize)).toBe('*?images@NONE?resize');
    expect(formatActionKey(fromAlice)).toBe('alice?images@ASYNC?approve');
  });
});
