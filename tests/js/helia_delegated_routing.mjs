// Stock Helia client code resolving an IPNS name and reading a file, with one ipfs-mount
// `--serve` address as its only router (delegated routing v1) and, through the provider
// record that router gives, its only gateway. No libp2p: nothing else can be reached.
//
// usage: node helia_delegated_routing.mjs <serve-url> <ipns-name> <path-in-the-tree>
// prints one JSON line: {"value": "/ipfs/<cid>", "size": N, "sha256": "<hex>", "providers": [...]}
import { createHash } from 'node:crypto'
import { createHeliaLight } from 'helia'
import { delegatedHTTPRouter } from '@helia/delegated-routing-client'
import { trustlessGatewayBlockBroker } from '@helia/trustless-gateway-client'
import { ipns } from '@helia/ipns'
import { unixfs } from '@helia/unixfs'
import { CID } from 'multiformats/cid'
import { base36 } from 'multiformats/bases/base36'

const [url, name, path] = process.argv.slice(2)
if (!url || !name || path == null) {
  console.error('usage: helia_delegated_routing.mjs <serve-url> <ipns-name> <path>')
  process.exit(2)
}
if (!/^http:\/\/(127\.[0-9.]+|\[::1\]):[0-9]+\/?$/.test(url)) {
  console.error(`refusing a non-loopback router: ${url}`)
  process.exit(2)
}

const helia = createHeliaLight({
  routers: [delegatedHTTPRouter({ url })],
  blockBrokers: [trustlessGatewayBlockBroker({ allowInsecure: true, allowLocal: true })]
})
await helia.start()
try {
  const names = ipns(helia)
  let resolved
  for await (const r of names.resolve(CID.parse(name, base36))) resolved = r
  if (resolved == null) throw new Error(`no result resolving ${name}`)
  const root = CID.parse(resolved.value.replace(/^\/ipfs\//, '').split('/')[0])
  const providers = []
  for await (const p of helia.routing.findProviders(root)) {
    providers.push({ id: p.id.toString(), addrs: p.multiaddrs.map(String) })
  }
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of unixfs(helia).cat(root, { path })) {
    hash.update(chunk)
    size += chunk.length
  }
  console.log(JSON.stringify({ value: resolved.value, size, sha256: hash.digest('hex'), providers }))
} finally {
  await helia.stop()
}
