// Deep linking: post the signed LtiDeepLinkingResponse back to the LMS as soon as the page loads.
(function () {
  "use strict";
  var form = document.getElementById("lti-return");
  if (form) { form.submit(); }
})();
