// LTI Dynamic Registration 1.0, section 3.6: tell the LMS the registration is done so it closes its window.
(function () {
  "use strict";
  var target = window.opener || (window.parent !== window ? window.parent : null);
  if (target) { target.postMessage({ subject: "org.imsglobal.lti.close" }, "*"); }
})();
