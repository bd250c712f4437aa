/** What txoutbox/sqs and txoutbox/sns both export besides their adapter: attribute names and the claim-check pointer. */
export { AWS_ADAPTER_ATTRIBUTES, decodeBody, MAX_ATTRIBUTES } from './attributes.js';
export { EXTENDED_POINTER_CLASS, parsePointer, type ClaimCheckOptions, type PayloadPointer } from './claim-check.js';
