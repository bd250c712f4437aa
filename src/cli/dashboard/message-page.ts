import { html, type Html } from './html.js';
import { layout, type PageFrame } from './layout.js';

/** A refusal or a failure, said plainly (the status code says the same to scripts). */
export function messagePage(frame: PageFrame, title: string, message: string): Html {
  return layout(
    frame,
    html`<h1>${title}</h1>
      <p class="notice bad" id="problem">${message}</p>`,
  );
}
