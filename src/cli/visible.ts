/**
 * Control characters a terminal would act on: C0 except tab and newline, DEL, and C1 (0x9b is an 8-bit CSI).
 * Broker error text (a webhook's response body), payloads and ids can carry OSC/CSI sequences that retitle the
 * window, clear the screen or worse; the CLI prints none of them raw.
 */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/**
 * Renders every control character as its JSON escape (`\x1b` → `\u001b`). Inside a JSON string literal that is the
 * same escape JSON would use, so `--json` output stays valid JSON that decodes to the original text.
 */
export function visible(text: string): string {
  return text.replace(CONTROL, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
