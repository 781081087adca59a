import { FerryError } from '../../shared/errors/ferry-error.js';
import { initCertificateAuthority, issueHostCertificate } from '../../shared/transport/certificate-authority.js';
import { intFlag, parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const CERTS_HELP = `Usage: ferry certs init --dir DIR --trust-domain TD [--days N]
       ferry certs issue --dir DIR --host NAME [--dns NAME]... [--ip ADDRESS]... [--out DIR] [--days N]

Makes the certificates the agents authenticate each other with (mutual TLS), through openssl.

  init    a CA for the trust domain TD: DIR/ca.pem and DIR/ca.key (0600; keep it off the agents' hosts)
  issue   a certificate and key for one host, signed by DIR's CA, with the identity spiffe://TD/ferry/NAME,
          the DNS name NAME (when it is one), and the --dns names and --ip addresses the peers dial it by:
          OUT/cert.pem, OUT/key.pem (0600) and OUT/ca.pem, OUT defaulting to DIR/hosts/NAME. Copy OUT to the
          host's /etc/ferry/tls (the agents' default) or name the files with --tls-cert, --tls-key, --tls-ca.
          Issuing again for the same OUT renews in place: running agents pick the new files up within a minute.

Options:
  --dir DIR            the CA's directory
  --trust-domain TD    init: the trust domain, e.g. ferry.example
  --host NAME          issue: the host's name in its identity
  --dns NAME           issue: a DNS name the host is dialed by (repeatable)
  --ip ADDRESS         issue: an IP address the host is dialed by (repeatable)
  --out DIR            issue: where the host's files go
  --days N             validity (init: 3650, issue: 365)
  -h, --help           this help`;

export async function certsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      dir: { type: 'string' },
      'trust-domain': { type: 'string' },
      host: { type: 'string' },
      dns: { type: 'string', multiple: true },
      ip: { type: 'string', multiple: true },
      out: { type: 'string' },
      days: { type: 'string' },
    },
    true,
  );
  if (values.help) {
    console.log(CERTS_HELP);
    return EXIT.ok;
  }
  const [action, ...extra] = positionals;
  if ((action !== 'init' && action !== 'issue') || extra.length > 0) {
    throw new FerryError('BAD_ARGUMENT', { message: 'ferry certs needs one action: init or issue', hint: 'ferry certs init --dir DIR --trust-domain TD; ferry certs issue --dir DIR --host NAME' });
  }
  if (!values.dir) throw new FerryError('BAD_ARGUMENT', { message: `ferry certs ${action} needs --dir DIR` });
  const days = intFlag('days', values.days);
  if (action === 'init') {
    if (!values['trust-domain']) throw new FerryError('BAD_ARGUMENT', { message: 'ferry certs init needs --trust-domain TD', hint: 'e.g. --trust-domain ferry.example' });
    const ca = await initCertificateAuthority({ dir: values.dir, trustDomain: values['trust-domain'], days });
    console.log(JSON.stringify({ event: 'ca', trustDomain: values['trust-domain'], ...ca }));
    return EXIT.ok;
  }
  if (!values.host) throw new FerryError('BAD_ARGUMENT', { message: 'ferry certs issue needs --host NAME' });
  const issued = await issueHostCertificate({ dir: values.dir, host: values.host, dnsNames: values.dns, ipAddresses: values.ip, out: values.out, days });
  console.log(JSON.stringify({ event: 'issued', ...issued }));
  return EXIT.ok;
}
