/**
 * How the mock upstream counts a request's tool definitions and JSON-schema response format
 * as prompt tokens, the way providers do: they are rendered into text the model reads and
 * billed as prompt tokens. The rendering follows OpenAI's (as published by those who
 * reverse-engineered it): functions as a TypeScript namespace,
 *
 *     # Tools
 *
 *     ## functions
 *
 *     namespace functions {
 *
 *     // Gets the weather.
 *     type get_weather = (_: {
 *     // The city.
 *     city: string,
 *     unit?: "c" | "f",
 *     }) => any;
 *
 *     } // namespace functions
 *
 * and a response format's schema as its JSON under a `# Response Formats` heading. This is
 * deliberately NOT the gateway's estimate (src/billing/token-count.ts countDefinitionTokens,
 * which counts the definitions' JSON plus allowances): the reservation must cover a provider's
 * count without knowing it, and the tests sweep shapes against this one to show it does.
 */
import { countTextTokens } from '../../billing/token-count';
import type { ChatCompletionRequest } from '../../openai/chat-request';

type Schema = Record<string, unknown>;

const isSchema = (v: unknown): v is Schema => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A JSON schema as a TypeScript type, the way the namespace rendering writes it. */
function typeOf(schema: unknown, indent: string): string {
  if (!isSchema(schema)) return 'any';
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(' | ') || 'any';
  switch (schema.type) {
    case 'string':
      return 'string';
    case 'number':
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array':
      return `${typeOf(schema.items, indent)}[]`;
    case 'object':
      return isSchema(schema.properties) ? `{\n${fields(schema, `${indent}`)}${indent}}` : 'object';
    default:
      return 'any';
  }
}

/** The members of an object schema, one per line, each after its description as a comment. */
function fields(schema: Schema, indent: string): string {
  const properties = isSchema(schema.properties) ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required.filter((r): r is string => typeof r === 'string') : []);
  let text = '';
  for (const [name, property] of Object.entries(properties)) {
    if (isSchema(property) && typeof property.description === 'string') text += `${indent}// ${property.description}\n`;
    text += `${indent}${name}${required.has(name) ? '' : '?'}: ${typeOf(property, indent)},\n`;
  }
  return text;
}

interface FunctionLike {
  name?: unknown;
  description?: unknown;
  parameters?: unknown;
}

function functionText(fn: FunctionLike): string {
  const name = typeof fn.name === 'string' ? fn.name : 'function';
  const description = typeof fn.description === 'string' ? `// ${fn.description}\n` : '';
  const params = isSchema(fn.parameters) && isSchema(fn.parameters.properties) && Object.keys(fn.parameters.properties).length > 0
    ? `(_: {\n${fields(fn.parameters, '')}}) => any`
    : '() => any';
  return `${description}type ${name} = ${params};\n\n`;
}

/** The text a provider adds to the prompt for the request's functions and response format ('' when none). */
export function definitionPromptText(request: ChatCompletionRequest): string {
  const functions: FunctionLike[] = [];
  for (const tool of request.tools ?? []) {
    if (tool.type === 'function' && tool.function) functions.push(tool.function);
  }
  for (const fn of request.functions ?? []) functions.push(fn);
  let text = '';
  if (functions.length > 0) {
    text += '# Tools\n\n## functions\n\nnamespace functions {\n\n';
    for (const fn of functions) text += functionText(fn);
    text += '} // namespace functions';
  }
  const format = request.response_format;
  if (format?.type === 'json_schema' && format.json_schema) {
    const { name, description, schema } = format.json_schema;
    text += `${text ? '\n\n' : ''}# Response Formats\n\n## ${name}\n\n${typeof description === 'string' ? `${description}\n\n` : ''}${JSON.stringify(schema ?? {})}`;
  }
  return text;
}

/** The prompt tokens of that text for the request's model. */
export function definitionPromptTokens(request: ChatCompletionRequest): number {
  return countTextTokens(definitionPromptText(request), request.model);
}
