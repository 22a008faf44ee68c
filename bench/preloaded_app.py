# ruff: noqa  (a copy of third-party example code, kept as written on purpose)
# The seeds' Flask back-end with one change: the key is parsed ONCE at import
# (the fair baseline: the obvious fix to the seed app). Otherwise as written.
# No `app.run(debug=True)` block; gunicorn serves it (bench/run.py runs it with
# --chdir to a directory holding private.pem, as the original expects).
from flask import Flask, jsonify, request
import jwt
import datetime

app = Flask(__name__)

# Load the RSA private key for JWT signing.
# Synerise requires JWTs to be signed with RSA.

from cryptography.hazmat.primitives import serialization

with open('private.pem', 'rb') as f:
    PRIVATE_KEY = serialization.load_pem_private_key(f.read(), password=None)

@app.route('/generate-jwt', methods=['POST'])
def generate_jwt():

    """
    Endpoint to generate JWT using the RS256 algorithm, as required by Synerise. This method expects a JSON payload containing the "email" and "uuid" of a customer.
    """

    # Retrieve the JSON payload from the request

    data = request.get_json()

    # Ensure both 'email' and 'uuid' are present in the request
    # As per documentation, the JWT payload should include customer's email and UUID.

    if not data or 'email' not in data or 'uuid' not in data:
        return jsonify({'error': 'Missing email or uuid in request'}), 400

    email = data['email']
    uuid = data['uuid']

    # JWT header as defined in the documentation
    # Synerise requires the JWT to use the RS256 algorithm.

    headers = {
        "alg": "RS256",
        "typ": "JWT"
    }

    # JWT payload as per Synerise's requirements

    payload = {
        "exp": datetime.datetime.utcnow() + datetime.timedelta(days=7),  # Token expiry set to 7 days as stated in the documentation
        "uuid": uuid,   # customer's UUID
        "email": email  # customer's email
    }

    # Generate the JWT token
    # The token is signed with the RSA private key as required by the documentation.
    token = jwt.encode(payload, PRIVATE_KEY, algorithm="RS256", headers=headers)

    return jsonify({'jwt': token})
