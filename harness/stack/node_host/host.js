'use strict';
// relay-harness Node host: runs one Lambda function's handler, one invocation at a time, for the
// Python side (harness/stack/node_runtime.py), which starts one such process per concurrency slot.
//
// argv[2] is a JSON object: {fd, root, handler}. Requests arrive on stdin, one JSON per
// line: {id, event, context}. Everything this host tells Python goes to the inherited pipe `fd`,
// one JSON per line: {type: "log", id, level, text} for console output, {type: "result", id,
// payload} or {type: "result", id, error, fatal?} for the outcome. The handler's own writes to
// process.stdout/stderr stay on those streams (Python logs them under the current request id).
// Error shapes follow the Lambda Node.js runtime: {errorType, errorMessage, trace}, and
// Runtime.ImportModuleError / Runtime.HandlerNotFound / Runtime.UnhandledPromiseRejection.

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const util = require('util');
const { pathToFileURL } = require('url');

const config = JSON.parse(process.argv[2]);
let current = null; // the request id of the invocation in flight

function send(message) {
  let line;
  try {
    line = JSON.stringify(message);
  } catch (err) {
    line = JSON.stringify({ type: 'result', id: message.id, error: runtimeError('Runtime.MarshalError',
      `Unable to stringify response body: ${err.message}`) });
  }
  const data = Buffer.from(line + '\n');
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += fs.writeSync(config.fd, data, offset);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
    }
  }
}

// console.* as Lambda's runtime shows them (level first), sent in order with the result.
for (const [method, level] of [['log', 'INFO'], ['info', 'INFO'], ['warn', 'WARN'], ['error', 'ERROR'],
  ['debug', 'DEBUG'], ['trace', 'TRACE']]) {
  console[method] = (...args) => send({ type: 'log', id: current, level, text: util.format(...args) });
}

function runtimeError(errorType, errorMessage) {
  return { errorType, errorMessage, trace: [] };
}

function describe(err) {
  if (err instanceof Error) {
    return { errorType: err.name || 'Error', errorMessage: err.message,
             trace: String(err.stack || '').split('\n') };
  }
  if (err && typeof err === 'object' && typeof err.errorType === 'string') return err;
  if (typeof err === 'string') return { errorType: 'string', errorMessage: err, trace: [] };
  return { errorType: typeof err, errorMessage: util.format(err), trace: [] };
}

// aws-sdk v2 ignores AWS_ENDPOINT_URL*; v3, boto3 and the other SDKs honour them. When the function
// folder resolves aws-sdk (v2), its services get those endpoints as per-service configuration.
const V2_SERVICES = {
  dynamodb: 'DYNAMODB', dynamodbstreams: 'DYNAMODB_STREAMS', apigatewaymanagementapi: 'APIGATEWAYMANAGEMENTAPI',
  eventbridge: 'EVENTBRIDGE', cloudwatchevents: 'CLOUDWATCH_EVENTS', sqs: 'SQS', sns: 'SNS', lambda: 'LAMBDA',
};

function configureSdkV2() {
  let resolved;
  try {
    resolved = require.resolve('aws-sdk', { paths: [config.root] });
  } catch {
    return;
  }
  const AWS = require(resolved);
  const update = {};
  for (const [service, suffix] of Object.entries(V2_SERVICES)) {
    const endpoint = process.env[`AWS_ENDPOINT_URL_${suffix}`] || process.env.AWS_ENDPOINT_URL;
    if (endpoint) update[service] = { endpoint };
  }
  AWS.config.update(update, true);
}

async function loadHandler() {
  const slash = config.handler.lastIndexOf('/');
  const base = config.handler.slice(slash + 1);
  const dot = base.indexOf('.');
  if (dot < 1) throw runtimeError('Runtime.MalformedHandlerName', `Bad handler ${config.handler}`);
  const modulePath = config.handler.slice(0, slash + 1) + base.slice(0, dot);
  const attribute = base.slice(dot + 1);
  const stem = path.resolve(config.root, modulePath);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => stem + ext).find((f) => fs.existsSync(f));
  if (!file) {
    throw runtimeError('Runtime.ImportModuleError', `Error: Cannot find module '${modulePath}'`);
  }
  let loaded;
  try {
    if (file.endsWith('.mjs')) {
      loaded = await import(pathToFileURL(file).href);
    } else {
      try {
        loaded = require(file);
      } catch (err) {
        if (err.code !== 'ERR_REQUIRE_ESM') throw err;
        loaded = await import(pathToFileURL(file).href);
      }
    }
  } catch (err) {
    if (err instanceof SyntaxError) throw runtimeError('Runtime.UserCodeSyntaxError', `${err.name}: ${err.message}`);
    if (err.code === 'MODULE_NOT_FOUND') throw runtimeError('Runtime.ImportModuleError', `Error: ${err.message}`);
    throw err;
  }
  const handler = attribute.split('.').reduce((value, key) => (value == null ? undefined : value[key]), loaded);
  if (typeof handler !== 'function') {
    throw runtimeError('Runtime.HandlerNotFound', `${modulePath}.${attribute} is undefined or not exported`);
  }
  return handler;
}

function makeContext(c, finish) {
  return {
    awsRequestId: c.awsRequestId,
    functionName: c.functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: c.invokedFunctionArn,
    memoryLimitInMB: String(c.memoryLimitInMB),
    logGroupName: c.logGroupName,
    logStreamName: c.logStreamName,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, c.deadlineMs - Date.now()),
    succeed: (value) => finish(null, value),
    fail: (err) => finish(err == null ? 'handled' : err),
    done: (err, value) => finish(err, value),
  };
}

// Runs the handler: async (a returned promise), callback style (event, context, callback), or a plain
// function's return value. Resolves to {payload} or {error}.
function run(handler, event, contextFields) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      resolve(err == null ? { payload: value === undefined ? null : value } : { error: describe(err) });
    };
    const context = makeContext(contextFields, finish);
    let returned;
    try {
      returned = handler(event, context, (err, value) => finish(err, value));
    } catch (err) {
      finish(err == null ? new Error('handler threw null') : err);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then((value) => finish(null, value), (err) => finish(err == null ? new Error(String(err)) : err));
    } else if (handler.length < 3) {
      finish(null, returned);
    }
  });
}

function fatal(error) {
  if (current !== null) {
    send({ type: 'result', id: current, error, fatal: true });
  } else {
    send({ type: 'log', id: null, level: 'ERROR', text: `${error.errorType}: ${error.errorMessage}` });
  }
  process.exit(1);
}

process.on('uncaughtException', (err) => fatal(describe(err)));
process.on('unhandledRejection', (reason) => fatal(runtimeError('Runtime.UnhandledPromiseRejection',
  reason instanceof Error ? `${reason.name}: ${reason.message}` : util.format(reason))));

let handlerPromise = null;

async function invoke(request) {
  current = request.id;
  let outcome;
  try {
    if (handlerPromise === null) {
      configureSdkV2();
      handlerPromise = loadHandler();
    }
    const handler = await handlerPromise;
    outcome = await run(handler, request.event, request.context);
  } catch (err) {
    // An init error: reported, and this instance is replaced (Lambda initialises again next time).
    send({ type: 'result', id: request.id, error: describe(err), fatal: true });
    process.exit(1);
  }
  send({ type: 'result', id: request.id, ...outcome });
  current = null;
}

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const request = JSON.parse(line);
  queue = queue.then(() => invoke(request));
}).on('close', () => process.exit(0));
