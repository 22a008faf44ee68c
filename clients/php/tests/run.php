<?php

// Tests of the PHP client against a real sidecar (tests/test_client_php.py starts it).
// Usage: php tests/run.php TARGET... -- DEAD_TARGET BLACKHOLE_TARGET
// Each TARGET (unix:///... or host:port) gets every test; prints "N passed, N failed".

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

use Synerise\Sidecar\Client;
use Synerise\Sidecar\Exception\DeadlineExceededException;
use Synerise\Sidecar\Exception\InvalidArgumentException;
use Synerise\Sidecar\Exception\SidecarException;
use Synerise\Sidecar\Exception\UnavailableException;
use Synerise\Sidecar\Outcome;

$passed = 0;
$failed = 0;

function check(bool $ok, string $what): void
{
    if (!$ok) {
        throw new RuntimeException("check failed: {$what}");
    }
}

/** @return SidecarException the exception $fn threw */
function throws(callable $fn, string $class): SidecarException
{
    try {
        $fn();
    } catch (SidecarException $e) {
        check($e instanceof $class, "expected {$class}, got " . get_class($e) . ': ' . $e->getMessage());
        return $e;
    }
    throw new RuntimeException("expected {$class}, nothing thrown");
}

function b64url(string $s): string
{
    return base64_decode(strtr($s, '-_', '+/'), true) ?: '';
}

$sep = array_search('--', $argv, true);
$targets = array_slice($argv, 1, $sep - 1);
[$dead, $blackhole] = array_slice($argv, $sep + 1, 2);
$email = 'customer@synerise.com';
$other = '0b0ebd4c-3c4b-4cdf-9a53-3a1e1d8b7d2a';

$tests = [];
foreach ($targets as $target) {
    $tests["three identity branches over {$target}"] = static function () use ($target, $email, $other): void {
        $c = new Client($target);
        $new = $c->resolveIdentity($email);
        check($new->outcome === Outcome::NewIdentity && $new->setIdentity, 'new identity');
        $same = $c->resolveIdentity($email, identityHash: $new->identityHash, cookieUuid: $other);
        check($same->outcome === Outcome::SameIdentity && $same->uuid === $other, 'same identity keeps the cookie UUID');
        $switched = $c->resolveIdentity($email, cookieHeader: "_snrs_uuid={$other}; _snrs_p=" .
            rawurlencode('uuid:' . $other . '&identityHash:12345'));
        check($switched->outcome === Outcome::SwitchedIdentity && $switched->uuid === $new->uuid, 'switched identity');
        check($switched->identityHash === $new->identityHash && $switched->setIdentity, 'switched: set identity');
        $claims = json_decode(b64url(explode('.', $new->token->jwt)[1]), true);
        check($claims['email'] === $email && $claims['uuid'] === $new->uuid, 'token claims');
        check($new->token->expiresAt === $claims['exp'], 'expiresAt is the exp claim');
    };
    $tests["the other four RPCs over {$target}"] = static function () use ($target, $email, $other): void {
        $c = new Client($target);
        $token = $c->issueToken($email, $other, ttlSeconds: 600);
        check($token->expiresAt - time() <= 600 && $token->expiresAt - time() > 590, 'ttl');
        $key = $c->getPublicKey();
        check($key->bits === 2048 && $key->keyId === $token->keyId, 'key id');
        check(str_starts_with($key->certificateCode, '-----BEGIN PUBLIC KEY-----'), 'certificate code');
        $jwk = json_decode($key->jwk, true);
        $pem = openssl_pkey_get_public($key->pem);
        check($pem !== false && $jwk['kty'] === 'RSA', 'pem and jwk');
        [$h, $p, $s] = explode('.', $token->jwt);
        check(openssl_verify("{$h}.{$p}", b64url($s), $pem, OPENSSL_ALGO_SHA256) === 1, 'RS256 signature verifies in PHP');
        $v = $c->verifyToken($token->jwt);
        check($v->valid && $v->uuid === $other && $v->email === $email && $v->expiresAt === $token->expiresAt, 'verify');
        $bad = $c->verifyToken($h . '.' . $p . '.AAAA');
        check(!$bad->valid && $bad->reason !== '', 'verify bad signature');
        $d = $c->evaluateEvent('form.submit', changesCustomerData: true);
        check(!$d->accepted && $d->requiresJwt && $d->rule !== '', 'form.submit without jwt refused');
        $d = $c->evaluateEvent('form.submit', changesCustomerData: true, jwt: $token->jwt);
        check($d->accepted, 'form.submit with jwt accepted');
    };
    $tests["errors are typed exceptions over {$target}"] = static function () use ($target, $email): void {
        $c = new Client($target);
        $e = throws(static fn () => $c->resolveIdentity('nope'), InvalidArgumentException::class);
        check(str_starts_with($e->getMessage(), 'email: ') && $e->errorCode === 'invalid_argument', $e->getMessage());
        check($e->httpStatus === 400 && $c->lastAttempts === 1, 'not retried');
        $e = throws(static fn () => $c->issueToken($email, 'not-a-uuid'), InvalidArgumentException::class);
        check(str_starts_with($e->getMessage(), 'uuid: '), $e->getMessage());
        $e = throws(static fn () => $c->issueToken($email, '0b0ebd4c-3c4b-4cdf-9a53-3a1e1d8b7d2a', 7 * 86400),
            InvalidArgumentException::class);
        check(str_starts_with($e->getMessage(), 'ttl: '), $e->getMessage());
        throws(static fn () => $c->verifyToken(''), InvalidArgumentException::class);
    };
}
$tests['unavailable is retried, then thrown'] = static function () use ($dead): void {
    $c = new Client($dead, timeout: 0.5, retries: 2, backoff: 0.01);
    throws(static fn () => $c->getPublicKey(), UnavailableException::class);
    check($c->lastAttempts === 3, "3 attempts, made {$c->lastAttempts}");
};
$tests['a timeout is deadline_exceeded, not retried'] = static function () use ($blackhole): void {
    $c = new Client($blackhole, timeout: 0.3, retries: 2);
    $t = microtime(true);
    throws(static fn () => $c->getPublicKey(), DeadlineExceededException::class);
    check($c->lastAttempts === 1 && microtime(true) - $t < 2.0, 'one attempt within the timeout');
};

foreach ($tests as $name => $test) {
    try {
        $test();
        $passed++;
        echo "ok - {$name}\n";
    } catch (Throwable $e) {
        $failed++;
        echo "FAIL - {$name}: " . get_class($e) . ': ' . $e->getMessage() . "\n";
    }
}
echo "{$passed} passed, {$failed} failed\n";
exit($failed === 0 ? 0 : 1);
