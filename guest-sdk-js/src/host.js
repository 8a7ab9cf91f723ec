// Where host calls go: the component's imports (guest.js), or the TestHost of
// a test. Exactly one backend is current while a run is on.

let current = null;

export function install(backend) {
  const previous = current;
  current = backend;
  return previous;
}

export function backend() {
  if (current === null) {
    throw new Error(
      "a quartzite-sdk host function was called outside a run; natively, " +
        "run job code under TestHost from 'quartzite-sdk/testing'",
    );
  }
  return current;
}
