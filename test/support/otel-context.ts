import { ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api';

/** A synchronous context manager for tests (no SDK installed): enqueue reads the active context before its first await. */
export class StackContextManager implements ContextManager {
  private stack: Context[] = [];
  active = () => this.stack[this.stack.length - 1] ?? ROOT_CONTEXT;
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ) {
    this.stack.push(ctx);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }
  bind = <T>(_ctx: Context, target: T) => target;
  enable = () => this;
  disable = () => ((this.stack = []), this);
}
