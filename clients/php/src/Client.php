<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

use Synerise\Sidecar\Exception\DeadlineExceededException;
use Synerise\Sidecar\Exception\SidecarException;
use Synerise\Sidecar\Exception\UnavailableException;

/**
 * The sidecar's five RPCs over the Connect protocol (JSON over HTTP/1.1), with plain PHP curl.
 *
 *     $sidecar = new Client('unix:///run/sidecar/http.sock');   // or 'http://127.0.0.1:50052'
 *     $who = $sidecar->resolveIdentity('customer@example.com', cookieHeader: $_SERVER['HTTP_COOKIE'] ?? '');
 *
 * Each call has a timeout (sent as Connect-Timeout-Ms, so the sidecar stops working on it
 * too); a call that fails as `unavailable` (no answer, or the sidecar says so) is retried
 * with a short backoff, nothing else is. Errors are exceptions, one class per code.
 */
final class Client
{
    private const SERVICE = '/sidecar.v1.IdentityService/';

    private string $baseUrl;
    private ?string $socketPath = null;
    /** @var \CurlHandle|null one handle per client: its connection is kept alive between calls */
    private ?\CurlHandle $curl = null;
    /** Attempts made by the last call (1 unless it was retried). */
    public int $lastAttempts = 0;

    /**
     * @param string $target  `unix:///path/to/http.sock`, `http://host:port` or `host:port`
     * @param float  $timeout seconds for the whole call, per attempt
     * @param int    $retries extra attempts after an `unavailable` failure
     */
    public function __construct(
        string $target,
        private readonly float $timeout = 2.0,
        private readonly int $retries = 2,
        private readonly float $backoff = 0.05,
    ) {
        if (str_starts_with($target, 'unix://')) {
            $this->socketPath = substr($target, strlen('unix://'));
            $this->baseUrl = 'http://localhost';
        } elseif (str_starts_with($target, 'http://')) {
            $this->baseUrl = rtrim($target, '/');
        } else {
            $this->baseUrl = 'http://' . $target;
        }
    }

    /**
     * ResolveIdentity: the UUID and identity hash the customer must carry, and a token.
     *
     * @param string   $identityHash what the browser has (`_snrs_p` identityHash), if known
     * @param string   $cookieUuid   the `_snrs_uuid` cookie, if known
     * @param string   $cookieHeader the raw Cookie header: fills in what the two above leave empty
     * @param int|null $ttlSeconds   token lifetime (null: the sidecar's default)
     */
    public function resolveIdentity(string $email, string $identityHash = '', string $cookieUuid = '',
                                    string $cookieHeader = '', ?int $ttlSeconds = null): Resolution
    {
        $body = ['email' => $email, 'identityHash' => $identityHash, 'cookieUuid' => $cookieUuid,
                 'cookieHeader' => $cookieHeader];
        return Resolution::fromJson($this->call('ResolveIdentity', self::withTtl($body, $ttlSeconds)));
    }

    /** IssueToken: a token for an email and a UUID the caller already chose. */
    public function issueToken(string $email, string $uuid, ?int $ttlSeconds = null): Token
    {
        $m = $this->call('IssueToken', self::withTtl(['email' => $email, 'uuid' => $uuid], $ttlSeconds));
        return Token::fromJson(Json::map($m['token'] ?? []));
    }

    /** GetPublicKey: the active key (PEM, certificate code to paste into Synerise, JWK). */
    public function getPublicKey(): PublicKey
    {
        return PublicKey::fromJson($this->call('GetPublicKey', []));
    }

    /** VerifyToken: checks a token the way Synerise does. */
    public function verifyToken(string $jwt): Verification
    {
        return Verification::fromJson($this->call('VerifyToken', ['jwt' => $jwt]));
    }

    /** EvaluateEvent: whether Synerise would accept the event from this browser. */
    public function evaluateEvent(string $action, bool $changesCustomerData = false, string $jwt = ''): EventDecision
    {
        return EventDecision::fromJson($this->call('EvaluateEvent',
            ['action' => $action, 'changesCustomerData' => $changesCustomerData, 'jwt' => $jwt]));
    }

    /**
     * @param array<string, mixed> $body
     * @return array<string, mixed>
     */
    private static function withTtl(array $body, ?int $ttlSeconds): array
    {
        if ($ttlSeconds !== null) {
            $body['ttl'] = $ttlSeconds . 's';
        }
        return $body;
    }

    /**
     * One unary call, retried on `unavailable` only.
     *
     * @param array<string, mixed> $body
     * @return array<string, mixed>
     */
    private function call(string $method, array $body): array
    {
        $this->lastAttempts = 0;
        for ($attempt = 0; ; $attempt++) {
            $this->lastAttempts++;
            try {
                return $this->once($method, $body);
            } catch (UnavailableException $e) {
                if ($attempt >= $this->retries) {
                    throw $e;
                }
                usleep((int) ($this->backoff * (2 ** $attempt) * 1e6));
            }
        }
    }

    /**
     * @param array<string, mixed> $body
     * @return array<string, mixed>
     */
    private function once(string $method, array $body): array
    {
        $ms = max(1, (int) round($this->timeout * 1000));
        $ch = $this->handle();
        curl_setopt_array($ch, [
            CURLOPT_URL => $this->baseUrl . self::SERVICE . $method,
            CURLOPT_POSTFIELDS => json_encode($body === [] ? new \stdClass() : $body, JSON_THROW_ON_ERROR),
            CURLOPT_TIMEOUT_MS => $ms,
            CURLOPT_CONNECTTIMEOUT_MS => $ms,
            CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Connect-Protocol-Version: 1',
                                   'Connect-Timeout-Ms: ' . $ms, 'Expect:'],
        ]);
        $raw = curl_exec($ch);
        if ($raw === false) {
            $errno = curl_errno($ch);
            $error = curl_error($ch);
            $this->close();  // a failed connection is not reused
            if ($errno === CURLE_OPERATION_TIMEDOUT) {
                throw new DeadlineExceededException("sidecar: no answer within {$ms} ms ({$error})", 'deadline_exceeded');
            }
            throw new UnavailableException("sidecar: cannot reach {$this->target()} ({$error})", 'unavailable');
        }
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $decoded = json_decode((string) $raw, true);
        if ($status === 200 && is_array($decoded)) {
            return $decoded;
        }
        if (is_array($decoded) && isset($decoded['code']) && is_string($decoded['code'])) {
            throw SidecarException::of($decoded['code'], (string) ($decoded['message'] ?? $decoded['code']), $status);
        }
        // Not a Connect answer (a proxy in between, or no sidecar): Connect's HTTP-to-code mapping.
        $code = match ($status) {
            400 => 'invalid_argument', 401 => 'unauthenticated', 403 => 'permission_denied', 404 => 'not_found',
            429, 502, 503, 504 => 'unavailable', default => 'unknown',
        };
        throw SidecarException::of($code, "sidecar: HTTP {$status} from {$this->target()}", $status);
    }

    private function handle(): \CurlHandle
    {
        if ($this->curl === null) {
            $ch = curl_init();
            curl_setopt_array($ch, [CURLOPT_POST => true, CURLOPT_RETURNTRANSFER => true,
                                    CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1, CURLOPT_NOSIGNAL => true]);
            if ($this->socketPath !== null) {
                curl_setopt($ch, CURLOPT_UNIX_SOCKET_PATH, $this->socketPath);
            }
            $this->curl = $ch;
        }
        return $this->curl;
    }

    private function target(): string
    {
        return $this->socketPath !== null ? 'unix://' . $this->socketPath : $this->baseUrl;
    }

    /** Drop the kept-alive connection (the next call opens a new one). */
    public function close(): void
    {
        if ($this->curl !== null) {
            curl_close($this->curl);
            $this->curl = null;
        }
    }
}
